r"""The top classes of your photos (files or folders), preprocessed as evaluation does, without
the dataset (docs/after_training.md, "Predict on your photos"):

    python -m alexnet_jax.tools.predict --workdir=workdirs/demo photo.jpg more_photos/ \
        [--ten_crop] [--json] [--top=5] [--config.eval.checkpoint=best]
    python -m alexnet_jax.tools.predict --weights=demo.npz photo.jpg
"""
import json
import os
import sys

import jax
import numpy as np
from absl import app
from absl import flags

from alexnet_jax import errors
from alexnet_jax import evaluate
from alexnet_jax import parallel
from alexnet_jax import steps
from alexnet_jax.checkpoints import trained_run
from alexnet_jax.data import sources
from alexnet_jax.tools import common


def find_images(args):
  """The files named, and the images (sources.IMAGE_EXTENSIONS) under the folders named,
  sorted within each folder."""
  paths = []
  for arg in args:
    arg = os.path.expanduser(arg)
    if os.path.isdir(arg):
      found = sorted(os.path.join(root, name) for root, _, names in os.walk(arg)
                     for name in names if name.lower().endswith(sources.IMAGE_EXTENSIONS))
      if not found:
        raise errors.MissingFileError(
            f"No images ({', '.join(sources.IMAGE_EXTENSIONS)}) under {arg}.")
      paths += found
    elif os.path.exists(arg):
      paths.append(arg)
    else:
      raise errors.MissingFileError(f"No such file or folder: {arg}")
  return paths


def logits(config, params, mesh, consts, paths, *, ten_crop=False, batch_size=None):
  """float32 [n, K] (centre crop) or [n, 10, K] (ten crops): the evaluation step's logits of
  the images at `paths` (which must decode), computed as evaluation computes them."""
  eval_step = steps.make_eval_step(config, mesh)
  out = []
  for batch in common.image_batches(config, common.files_split(paths),
                                    batch_size=batch_size or config.eval.batch_size):
    batch_logits = eval_step(params, parallel.to_global(mesh, batch["image"]), consts, ten_crop)
    out.append(np.asarray(jax.device_get(batch_logits))[batch["mask"]])
  return np.concatenate(out) if out else np.zeros((0, config.model.num_classes), np.float32)


def probabilities(logits_array):
  """The crops' softmax averaged (4.1): of the ten crops [n, 10, K], or of the centre's [n, K]."""
  crops = logits_array[:, None] if logits_array.ndim == 2 else logits_array
  return np.asarray(evaluate.crop_scores(crops))


def top_classes(probs, class_names, top):
  """[[{"class", "name", "probability"}] * top] per image, most probable first (ties to the
  lower class index, as evaluation ranks them)."""
  order = np.argsort(-probs, axis=-1, kind="stable")[:, :top]
  return [[{"class": int(k), "name": class_names[k], "probability": float(p[k])} for k in row]
          for p, row in zip(probs, order)]


def text(path, top):
  width = max(len(t["name"]) for t in top)
  return "\n".join([path] + [f"  {i + 1}. {t['name']:<{width}}  {100 * t['probability']:5.1f}%"
                             for i, t in enumerate(top)])


def main(argv):
  if len(argv) < 2:
    raise app.UsageError("Name one or more image files or folders after the flags.")
  f = flags.FLAGS
  config = common.config_from_flags()
  good, bad = common.readable(find_images(argv[1:]))
  for path, message in bad:
    print(f"{path}: cannot be decoded: {message}", file=sys.stderr)
  source = common.source()
  config, params, step = trained_run.load_run(source, config=config)
  mesh = parallel.make_mesh(config)
  consts = parallel.place_replicated(mesh, trained_run.constants(source, config))
  probs = probabilities(logits(config, params, mesh, consts, good, ten_crop=f.ten_crop))
  tops = top_classes(probs, trained_run.class_names(source, config), f.top)
  if f.json:
    print(json.dumps({"workdir": f.workdir, "weights": f.weights, "step": step,
                      "ten_crop": f.ten_crop,
                      "predictions": [{"file": p, "top": t} for p, t in zip(good, tops)],
                      "errors": [{"file": p, "error": m} for p, m in bad]}, indent=2))
  else:
    print(f"Step {step} of {source}, {'ten crops' if f.ten_crop else 'centre crop'}:")
    for path, top in zip(good, tops):
      print(text(path, top))
  return 1 if bad else 0


if __name__ == "__main__":
  from alexnet_jax.faults import logs
  common.define_flags()
  flags.adopt_module_key_flags(common)  # Listed by --help, as this command's own.
  flags.DEFINE_bool("ten_crop", False, "Average the softmax over the ten crops (4.1).")
  flags.DEFINE_bool("json", False, "Print JSON for scripts instead of text.")
  flags.DEFINE_integer("top", 5, "How many classes to list per image.")
  app.run(logs.one_line_errors(main, "tools.predict"))
