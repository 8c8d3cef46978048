r"""torchvision's trained AlexNet (the 2014 network, config.model.name="owt") in: the weights
file and, with --workdir, a run at step 0 (docs/design.md, "Weights in"):

    python -m alexnet_jax.tools.torchvision --weights=alexnet-owt-7be5be79.pth \
        [--synsets=synset_words.txt] --out=owt.npz [--workdir=workdirs/owt]
"""
import numpy as np
from absl import flags

from alexnet_jax import errors
from alexnet_jax.configs import paper
from alexnet_jax.tools import caffe

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)
STD_MEAN = 0.226  # STD's mean.
# This network's layers and torchvision's modules, with torch's weight shapes at 1,000 classes.
LAYERS = {"conv1": ("features.0", (64, 3, 11, 11)), "conv2": ("features.3", (192, 64, 5, 5)),
          "conv3": ("features.6", (384, 192, 3, 3)), "conv4": ("features.8", (256, 384, 3, 3)),
          "conv5": ("features.10", (256, 256, 3, 3)), "fc6": ("classifier.1", (4096, 9216)),
          "fc7": ("classifier.4", (4096, 4096)), "fc8": ("classifier.6", (1000, 4096))}
POOL = 6  # The average pool's output, fc6's input: 6 x 6 x 256.


def model_config(num_classes=1000):
  """The paper's config with the 2014 network and torchvision's preprocessing."""
  config = paper.get_config()
  config.model.update(name="owt", norm="none", width=1.0, num_classes=num_classes,
                      image_size=224, dropout_scaling="inverted",
                      input_scale=1.0 / (255.0 * STD_MEAN))
  config.data.update(resize_size=256, resize="antialias", mean="image")
  return config


def convert(state_dict):
  """This network's parameters (NumPy, a tower axis of 1) of torchvision's state_dict, refusing,
  by the first tensor, what is not AlexNet's."""
  params = {}
  for layer, (module, shape) in LAYERS.items():
    if layer == "fc8" and module + ".weight" in state_dict:  # Any number of classes.
      shape = np.shape(state_dict[module + ".weight"])[:1] + shape[1:]
    w, b = (_array(state_dict, module + leaf, want)
            for leaf, want in ((".weight", shape), (".bias", shape[:1])))
    if layer.startswith("conv"):
      kernel = w.transpose(2, 3, 1, 0)                       # O,I,H,W -> H,W,I,O.
      if layer == "conv1":  # x / std_c: input_scale's 1 / STD_MEAN, then STD_MEAN / std_c.
        kernel = kernel * (STD_MEAN / STD)[None, None, :, None]
    else:
      if layer == "fc6":                                     # Inputs C,H,W -> H,W,C.
        w = w.reshape(w.shape[0], -1, POOL, POOL).transpose(0, 2, 3, 1).reshape(w.shape[0], -1)
      kernel = w.T                                           # [out, in] -> [in, out].
    params[layer] = {"kernel": np.ascontiguousarray(kernel[None], np.float32), "bias": b[None]}
  return params


def _array(state_dict, name, want):
  if name not in state_dict:
    raise errors.ConfigError(f"Not torchvision's AlexNet: no tensor {name!r} (of shape "
                             f"{list(want)}) in the state_dict.")
  value = np.asarray(state_dict[name], np.float32)
  if value.shape != want:
    raise errors.ConfigError(f"Not torchvision's AlexNet: {name!r} has shape "
                             f"{list(value.shape)}, not {list(want)}.")
  return value


def read(path):
  """(config, params, mean image) of a torchvision AlexNet state_dict saved with torch.save."""
  import pickle  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top  (only the import needs it)
  try:
    state_dict = torch.load(path, map_location="cpu", weights_only=True)
  except (pickle.UnpicklingError, RuntimeError, EOFError) as e:
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise errors.ConfigError(f"{path}: not a state_dict torch.load(weights_only=True) reads "
                             f"({first}).") from e
  if not isinstance(state_dict, dict):
    raise errors.ConfigError(f"{path} holds a {type(state_dict).__name__}, not a state_dict.")
  params = convert(state_dict)
  mean = np.broadcast_to(255.0 * MEAN, (256, 256, 3)).astype(np.float32)  # On the 0-255 scale.
  return model_config(params["fc8"]["kernel"].shape[-1]), params, mean


def main(argv):
  del argv
  config, params, mean = read(flags.FLAGS.weights)
  caffe.write_outputs(config, params, mean, f"{flags.FLAGS.weights}: AlexNet of 2014, "
                      f"{config.model.num_classes} classes")


if __name__ == "__main__":
  from absl import app
  from alexnet_jax.faults import logs
  flags.DEFINE_string("weights", None, "alexnet-owt-7be5be79.pth: a state_dict.", required=True)
  caffe.define_output_flags()
  flags.adopt_module_key_flags(caffe)  # Listed by --help, as this command's own.
  app.run(logs.one_line_errors(main, "tools.torchvision"))
