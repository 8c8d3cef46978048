r"""Caffe's trained AlexNet (BVLC/caffe's bvlc_alexnet) in, read without Caffe: the weights file
and, with --workdir, a run at step 0 (docs/design.md, "Weights in"):

    python -m alexnet_jax.tools.caffe --prototxt=deploy.prototxt \
        --caffemodel=bvlc_alexnet.caffemodel --mean=ilsvrc_2012_mean.binaryproto \
        [--synsets=synset_words.txt] --out=bvlc_alexnet.npz [--workdir=workdirs/bvlc_alexnet]
"""
import pathlib

import numpy as np
from absl import flags
from google.protobuf import text_format

from alexnet_jax import errors
from alexnet_jax import runtime
from alexnet_jax.checkpoints import weights_file
from alexnet_jax.configs import paper
from alexnet_jax.nets import alexnet
from alexnet_jax.tools import caffe_proto

TOWERS = alexnet.NUM_TOWERS
# The layers in the order AlexNet runs them (ReLUs, Dropouts and the input left out), with
# the geometry each convolution must have: (kernel, stride, pad, group).
SEQUENCE = ("conv1", "norm1", "pool1", "conv2", "norm2", "pool2", "conv3", "conv4", "conv5",
            "pool5", "fc6", "fc7", "fc8")
CONV_GEOMETRY = {"conv1": (11, 4, 0, 1), "conv2": (5, 1, 2, 2), "conv3": (3, 1, 1, 1),
                 "conv4": (3, 1, 1, 2), "conv5": (3, 1, 1, 2)}
_KIND = {"Convolution": "conv", "LRN": "norm", "Pooling": "pool", "InnerProduct": "fc"}
_IGNORED = ("Input", "Data", "ReLU", "Dropout", "Softmax", "SoftmaxWithLoss", "Accuracy",
            "Split", "Silence")


def layers(net):
  """[(name, type, message)] of either message format: `layer` (type a string) or the 2014
  `layers` (V1, type an enum, named here as `layer` names it)."""
  if net.layer:
    return [(m.name, m.type, m) for m in net.layer]
  names = caffe_proto.V1LayerParameter.LayerType
  return [(m.name, caffe_proto.V1_TYPES.get(names.Name(m.type), names.Name(m.type)), m)
          for m in net.layers]


def blob_array(blob):
  """A BlobProto as float32, its shape from `shape` or the older num, channels, height, width."""
  shape = (tuple(blob.shape.dim) if blob.HasField("shape") else
           tuple(d for d in (blob.num, blob.channels, blob.height, blob.width)))
  data = np.asarray(blob.data if len(blob.data) else blob.double_data, np.float32)
  if data.size != int(np.prod(shape)):
    raise errors.ConfigError(f"A blob of shape {shape} holds {data.size} values.")
  return data.reshape(shape)


def read_mean(path):
  """Caffe's mean image ([1, 3, H, W] BGR) as float32 [H, W, 3] RGB, the mean of this package."""
  mean = blob_array(caffe_proto.BlobProto.FromString(pathlib.Path(path).read_bytes()))
  mean = mean.reshape(mean.shape[-3:])
  if mean.shape[0] != 3:
    raise errors.ConfigError(f"{path}: a mean of shape {mean.shape}, not [1, 3, H, W] (BGR).")
  return np.ascontiguousarray(mean[::-1].transpose(1, 2, 0))


def _structure(net):
  """{SEQUENCE name: layer message}, refusing any net that is not AlexNet's shape and geometry."""
  found = []
  for name, kind, message in layers(net):
    if kind in _IGNORED:
      continue
    if kind not in _KIND:
      raise errors.ConfigError(f"Layer {name!r} of type {kind!r}: not a layer of AlexNet.")
    found.append((_KIND[kind], message))
  kinds = [k for k, _ in found]
  want = [s.rstrip("0123456789") for s in SEQUENCE]
  if kinds != want:
    raise errors.ConfigError(
        f"The net's layers run {kinds}; AlexNet's run {want} (LRN before pooling: "
        "CaffeNet, which pools first, is another network).")
  structure = {canonical: message for canonical, (_, message) in zip(SEQUENCE, found)}
  for name, (kernel, stride, pad, group) in CONV_GEOMETRY.items():
    p = structure[name].convolution_param
    got = (_first(p.kernel_size, p.kernel_h, 0), _first(p.stride, p.stride_h, 1),
           _first(p.pad, p.pad_h, 0), p.group)
    if got != (kernel, stride, pad, group):
      raise errors.ConfigError(f"{name}: (kernel, stride, pad, group) {got}; AlexNet's are "
                               f"{(kernel, stride, pad, group)}.")
  pools = [structure[p].pooling_param for p in ("pool1", "pool2", "pool5")]
  if pools[0].pool != 0 or pools[0].pad or any(p != pools[0] for p in pools):
    raise errors.ConfigError("AlexNet's three poolings are the same unpadded max pooling.")
  norms = [structure[n].lrn_param for n in ("norm1", "norm2")]
  if norms[0] != norms[1] or norms[0].norm_region != 0:
    raise errors.ConfigError("AlexNet's two LRN layers are the same, across channels.")
  return structure


def _decimal(x):
  """A float32 of the prototxt as the decimal it was written as (1e-4, not 9.9999997e-05), so
  that the config equals configs/paper.py:caffe's where they agree."""
  return float(f"{float(x):.7g}")


def _first(repeated, single, default):
  return repeated[0] if len(repeated) else (single or default)


def _check_tiling(model_cfg):
  """Caffe rounds a convolution's output size down and a pooling's up, this network conv1's as
  cuda-convnet (conv1_overhang) and pooling's down: they agree where every window tiles exactly."""
  size, sizes = model_cfg.image_size, alexnet.feature_map_sizes(model_cfg)
  pools = (sizes["conv1"], sizes["conv2"], sizes["conv5"])
  if alexnet.conv1_overhang(size) or any(
      (n - model_cfg.pool_window) % model_cfg.pool_stride for n in pools):
    raise errors.ConfigError(f"An input of {size}x{size}: conv1 or a pooling does not tile it, and "
                             "Caffe sizes those maps otherwise than this network; use 227.")


def _input_size(net):
  """The input's height: input_param (layer format), input_shape or input_dim (older)."""
  for _, kind, message in layers(net):
    if kind == "Input" and message.input_param.shape:
      return int(message.input_param.shape[0].dim[2])
  if net.input_shape:
    return int(net.input_shape[0].dim[2])
  if len(net.input_dim) >= 4:
    return int(net.input_dim[2])
  return 227


def model_config(net, mean_size=256):
  """configs/paper.py:caffe (how Caffe trained it, for fine-tuning) with the prototxt's network."""
  structure = _structure(net)
  config = paper.get_config("caffe")
  m = config.model
  m.width = structure["conv1"].convolution_param.num_output / (
      TOWERS * alexnet.TOWER_CHANNELS["conv1"])
  m.num_classes = int(structure["fc8"].inner_product_param.num_output)
  m.image_size = _input_size(net)
  norm, pool = structure["norm1"].lrn_param, structure["pool1"].pooling_param
  m.update(norm="lrn", lrn_convention="caffe", lrn_across_towers=True, lrn_k=_decimal(norm.k),
           lrn_n=int(norm.local_size), lrn_alpha=_decimal(norm.alpha), lrn_beta=_decimal(norm.beta),
           pool_window=int(pool.kernel_size), pool_stride=int(pool.stride), activation="relu",
           dropout_scaling="inverted", input_scale=1.0)
  dropouts = [message.dropout_param.dropout_ratio for _, kind, message in layers(net)
              if kind == "Dropout"]
  m.dropout_rate = _decimal(dropouts[0]) if dropouts else 0.0
  config.data.resize_size = mean_size
  alexnet.check_config(m)
  _check_tiling(m)
  widths = alexnet.tower_widths(m)
  for name in list(CONV_GEOMETRY) + ["fc6", "fc7"]:
    p = structure[name].convolution_param if name in CONV_GEOMETRY else \
        structure[name].inner_product_param
    if p.num_output != TOWERS * widths[name]:
      raise errors.ConfigError(f"{name}: {p.num_output} outputs; AlexNet at width {m.width} has "
                               f"{TOWERS * widths[name]}.")
  return config


def convert(weights, model_cfg):
  """The global parameters (NumPy, tower axis first) of a .caffemodel's NetParameter."""
  weighted = [m for _, kind, m in layers(weights) if kind in ("Convolution", "InnerProduct")]
  if len(weighted) != len(alexnet.LAYERS):
    raise errors.ConfigError(
        f"The caffemodel has {len(weighted)} convolution and inner-product layers, "
        f"not AlexNet's {len(alexnet.LAYERS)}.")
  shapes = alexnet.param_shapes(model_cfg)
  pool5 = alexnet.feature_map_sizes(model_cfg)["pool5"]
  params = {}
  for layer, message in zip(alexnet.LAYERS, weighted):
    if len(message.blobs) != 2:
      raise errors.ConfigError(f"The caffemodel's {message.name!r} holds {len(message.blobs)} "
                               "blobs, not a weight and a bias.")
    kernel_shape, bias_shape = shapes[layer]
    out_total = TOWERS * kernel_shape[-1]
    w, b = (blob_array(blob) for blob in message.blobs)
    if w.size != np.prod(kernel_shape) or b.size != out_total:
      raise errors.ConfigError(
          f"{message.name}: weights {list(w.shape)} and {b.size} biases; AlexNet's {layer} at "
          f"width {model_cfg.width} has {np.prod(kernel_shape)} weights and {out_total} biases.")
    if layer.startswith("conv"):
      w = w.reshape(out_total, kernel_shape[3], *kernel_shape[1:3])   # O, I/group, H, W.
      if layer == "conv1":
        w = w[:, ::-1]                                                # BGR -> RGB.
      kernel = w.reshape(TOWERS, -1, *w.shape[1:]).transpose(0, 3, 4, 2, 1)
    else:
      transpose = message.inner_product_param.transpose
      w = w.reshape((-1, out_total) if transpose else (out_total, -1))
      w = w.T if transpose else w                                     # [outputs, inputs].
      if layer == "fc6":   # C,H,W -> H,W,C: the order this network flattens pool5 in.
        w = w.reshape(out_total, -1, pool5, pool5).transpose(0, 2, 3, 1).reshape(out_total, -1)
      kernel = w.reshape(TOWERS, -1, w.shape[1]).transpose(0, 2, 1)
    params[layer] = {"kernel": np.ascontiguousarray(kernel, np.float32),
                     "bias": b.reshape(bias_shape).astype(np.float32)}
  return params


def read(prototxt, caffemodel, mean=None):
  """(config, params, mean image [R, R, 3] RGB or None) of Caffe's files."""
  mean_image = read_mean(mean) if mean else None
  # The prototxt's fields this reader does not know are skipped.
  net = text_format.Parse(pathlib.Path(prototxt).read_text(), caffe_proto.NetParameter(),
                          allow_unknown_field=True)
  config = model_config(net, mean_image.shape[0] if mean_image is not None else 256)
  weights = caffe_proto.NetParameter.FromString(pathlib.Path(caffemodel).read_bytes())
  return config, convert(weights, config.model), mean_image


def read_synsets(path, num_classes):
  """Caffe's synset_words.txt ("n01440764 tench, Tinca tinca" per line) as class names."""
  if not path:
    return [f"class {k}" for k in range(num_classes)]
  with open(path) as f:
    names = [line.strip().partition(" ")[2] or line.strip() for line in f if line.strip()]
  if len(names) != num_classes:
    raise errors.ConfigError(f"{path} names {len(names)} classes; the net has {num_classes}.")
  return names


def define_output_flags():
  """The flags of what both importers (this one and tools/torchvision.py) write."""
  flags.DEFINE_string("synsets", None, "synset_words.txt (Caffe's), for the class names.")
  flags.DEFINE_string("out", None, "The weights .npz to write (config.init_from).", required=True)
  flags.DEFINE_string("workdir", None, "Also write a run at step 0 here.")


def write_outputs(config, params, mean, what):
  """Both importers' end: the weights file at --out and, with --workdir, the run at step 0."""
  f = flags.FLAGS
  runtime.configure_jax(config.mesh.num_cpu_devices)
  names = read_synsets(f.synsets, config.model.num_classes)
  path = weights_file.write_import(f.out, f.workdir, config, params, names, mean)
  print(f"{what} -> {path}")
  if f.workdir:
    print(f"A run at step 0 in {f.workdir}: predict, features, figures and eval_only read it.")


def main(argv):
  del argv
  f = flags.FLAGS
  config, params, mean = read(f.prototxt, f.caffemodel, f.mean)
  if mean is None:  # Caffe's mean_value: B, G, R.
    rgb = [float(v) for v in f.mean_value][::-1]
    mean = np.broadcast_to(np.asarray(rgb, np.float32), (config.data.resize_size,) * 2 + (3,))
  m = config.model
  write_outputs(config, params, mean, f"{f.caffemodel}: AlexNet at width {m.width}, "
                f"{m.num_classes} classes, {m.image_size}x{m.image_size} crops")


if __name__ == "__main__":
  from absl import app
  from alexnet_jax.faults import logs
  flags.DEFINE_string("prototxt", None, "Caffe's deploy.prototxt.", required=True)
  flags.DEFINE_string("caffemodel", None, "bvlc_alexnet.caffemodel.", required=True)
  flags.DEFINE_string("mean", None, "ilsvrc_2012_mean.binaryproto (BGR); or --mean_value.")
  flags.DEFINE_list("mean_value", ["104", "117", "123"], "B,G,R means without --mean.")
  define_output_flags()
  app.run(logs.one_line_errors(main, "tools.caffe"))
