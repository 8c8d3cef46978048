r"""The paper's figures 3 (conv1's kernels) and 4 (the training images nearest each query in
fc7) for a trained run (docs/after_training.md); with --weights=FILE.npz figure 4 needs the
dataset's --config.data.* fields:

    python -m alexnet_jax.tools.figures --workdir=workdirs/demo --out=experiments/results/demo \
        [--figures=fig3,fig4] [--queries=a.jpg,b.jpg] [--num_queries=5] [--neighbours=6] \
        [--max_train=0] [--config.eval.checkpoint=best]
"""
import json
import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
from absl import app
from absl import flags
from PIL import Image, ImageDraw

from alexnet_jax import errors
from alexnet_jax import parallel
from alexnet_jax import progress
from alexnet_jax.checkpoints import trained_run
from alexnet_jax.data import sources
from alexnet_jax.tools import common
from alexnet_jax.tools import features

FIG3_COLUMNS = 16   # The paper's figure 3: 16 kernels to a row, 3 rows per tower.
FIG3_SCALE = 4      # Each kernel pixel as 4x4 pixels.
GAP = 2             # Pixels between cells; twice that between the towers.
BACKGROUND = 255


def fig3_layout(per_tower, columns=FIG3_COLUMNS, scale=FIG3_SCALE, size=11, towers=2):
  """(height, width, origin(tower, i) -> (y, x)) of the grid of towers x `per_tower` kernels."""
  columns = min(columns, per_tower)
  rows = math.ceil(per_tower / columns)
  cell = size * scale
  tower_height = rows * cell + (rows - 1) * GAP

  def origin(tower, i):
    row, column = divmod(i, columns)
    return tower * (tower_height + 2 * GAP) + row * (cell + GAP), column * (cell + GAP)

  return (towers * tower_height + (towers - 1) * 2 * GAP, columns * cell + (columns - 1) * GAP,
          origin)


def fig3_image(conv1_kernel, scale=FIG3_SCALE):
  """uint8 [H, W, 3]: conv1's kernel [towers, kh, kw, 3, C] as figure 3 draws it."""
  kernel = np.asarray(conv1_kernel, np.float32)
  towers, size, _, _, per_tower = kernel.shape
  height, width, origin = fig3_layout(per_tower, scale=scale, size=size, towers=towers)
  image = np.full((height, width, 3), BACKGROUND, np.uint8)
  cell = size * scale
  for tower in range(towers):
    for i in range(per_tower):
      y, x = origin(tower, i)
      k = kernel[tower, :, :, :, i]
      low, high = float(k.min()), float(k.max())  # Each from its own range; a constant one grey.
      k = np.full(k.shape, 128) if high == low else np.round(255.0 * (k - low) / (high - low))
      image[y:y + cell, x:x + cell] = k.astype(np.uint8).repeat(scale, 0).repeat(scale, 1)
  return image


def write_fig3(path, params):
  kernel = jax.device_get(params["conv1"]["kernel"])
  if kernel.ndim != 5 or kernel.shape[1:4] != (11, 11, 3):
    raise errors.ConfigError(
        f"conv1's kernel has shape {kernel.shape}, not AlexNet's [towers, 11, 11, 3, C]:"
        " figure 3 draws AlexNet's conv1 only.")
  Image.fromarray(fig3_image(kernel)).save(path)
  return path


def nearest_training_images(config, params, mesh, consts, queries, *, k=6, max_train=0):
  """(distances [Q, k], training indices [Q, k], their images [Q, k, R, R, 3]) nearest each
  query [Q, R, R, 3] in fc7 of the centre crops, streaming the training split once."""
  extract = features.make_extract(config, mesh, ["fc7"])
  batch_size = config.eval.batch_size
  padded = np.pad(queries, [(0, -len(queries) % batch_size)] + [(0, 0)] * 3)
  query_fc7 = jnp.asarray(np.concatenate([
      jax.device_get(extract(params, parallel.to_global(mesh, images), consts)["fc7"])
      for images in np.split(padded, len(padded) // batch_size)])[:len(queries)])
  split = sources.open_checked_split(config, config.data.train_split)
  total = split.num_examples if not max_train else min(max_train, split.num_examples)
  best_d = np.full((len(queries), k), np.inf)
  best_i = np.full((len(queries), k), -1, np.int64)
  best_images = np.zeros((len(queries), k) + queries.shape[1:], np.uint8)
  with progress.Progress(total, "figure 4: fc7 of the training images") as bar:
    for batch in common.image_batches(config, split, batch_size=batch_size, stop=total):
      fc7 = extract(params, parallel.to_global(mesh, batch["image"]), consts)["fc7"]
      d = np.asarray(jax.device_get(_distances(query_fc7, fc7)), np.float64)
      d[:, ~batch["mask"]] = np.inf
      _merge(best_d, best_i, best_images, d, batch["index"], batch["image"])
      bar.update(int(batch["mask"].sum()))
  return best_d, best_i, best_images


@jax.jit
def _distances(queries_QD, batch_BD):
  """Euclidean distances [Q, B], from the differences themselves: an image compared with
  itself gives exactly 0 (the expanded |q|^2 + |x|^2 - 2qx would leave rounding error)."""
  return jnp.sqrt(jnp.sum(jnp.square(queries_QD[:, None, :] - batch_BD[None, :, :]), axis=-1))


def _merge(best_d, best_i, best_images, d_QB, index_B, images_B):
  """Keeps, per query, the k smallest of its current k and this batch's distances (ties to the
  earlier training image)."""
  k = best_d.shape[1]
  for q in range(best_d.shape[0]):
    dists = np.concatenate([best_d[q], d_QB[q]])
    order = np.argsort(dists, kind="stable")[:k]
    best_d[q], best_i[q] = dists[order], np.concatenate([best_i[q], index_B])[order]
    # np.stack copies the kept images out before the row is overwritten.
    best_images[q] = np.stack([best_images[q, j] if j < k else images_B[j - k] for j in order])


def fig4_image(queries, neighbours, distances, thumb=96):
  """uint8: one row per query, the query then its neighbours, each image's centre `thumb`
  pixels square, the distance under each neighbour."""
  q, k = neighbours.shape[:2]
  caption, gap, wide = 14, GAP * 2, GAP * 6
  width = (k + 1) * thumb + k * gap + wide
  height = q * (thumb + caption) + (q - 1) * gap
  canvas = Image.new("RGB", (width, height), (BACKGROUND,) * 3)
  draw = ImageDraw.Draw(canvas)
  for row in range(q):
    y = row * (thumb + caption + gap)
    for col in range(k + 1):
      image = queries[row] if col == 0 else neighbours[row, col - 1]
      x = 0 if col == 0 else thumb + wide + (col - 1) * (thumb + gap)
      canvas.paste(Image.fromarray(image).resize((thumb, thumb), Image.BILINEAR), (x, y))
      label = "query" if col == 0 else f"{distances[row, col - 1]:.1f}"
      draw.text((x + 2, y + thumb + 1), label, fill=(0, 0, 0))
  return np.asarray(canvas)


def query_images(config, files, num):
  """(uint8 [Q, R, R, 3], names): the named files, or `num` evaluation images evenly spaced
  through the split (in a class-sorted folder: different classes)."""
  if files:
    _, bad = common.readable(files)
    if bad:
      raise errors.ConfigError("\n".join(f"{p}: cannot be decoded: {m}" for p, m in bad))
    split, picks = common.files_split(files), range(len(files))
  else:
    split = sources.open_checked_split(config, sources.eval_split_name(config))
    picks = np.unique(np.linspace(0, split.num_examples - 1, num).round().astype(np.int64)).tolist()
  images = [next(common.image_batches(config, split, batch_size=1, start=i, stop=i + 1))["image"][0]
            for i in picks]
  return np.stack(images), [common.file_names(split)[i] for i in picks]


def write_fig4(out, config, params, mesh, consts, *, files=(), num_queries=5, k=6,
               max_train=0):
  """fig4.png and fig4.json (queries, neighbours' files and distances) in `out`."""
  queries, names = query_images(config, list(files), num_queries)
  d, idx, images = nearest_training_images(config, params, mesh, consts, queries, k=k,
                                           max_train=max_train)
  crop = config.model.image_size
  lo = (config.data.resize_size - crop) // 2
  centre = lambda x: x[..., lo:lo + crop, lo:lo + crop, :]  # noqa: E731  What the net saw.
  png = pathlib.Path(out) / "fig4.png"
  Image.fromarray(fig4_image(centre(queries), centre(images), d)).save(png)
  train_names = common.file_names(sources.open_checked_split(config, config.data.train_split))
  rows = [{"query": name, "neighbours": [{"file": train_names[i], "index": int(i),
                                          "distance": float(x)} for i, x in zip(ri, rd)]}
          for name, ri, rd in zip(names, idx, d)]
  (pathlib.Path(out) / "fig4.json").write_text(json.dumps(rows, indent=2) + "\n")
  return png, rows


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  f = flags.FLAGS
  config = common.config_from_flags()
  source = common.source()
  config, params, step = trained_run.load_run(source, config=config)
  out = pathlib.Path(f.out)
  out.mkdir(parents=True, exist_ok=True)
  if "fig3" in f.figures:
    print(f"Figure 3 (conv1 of step {step}) -> {write_fig3(out / 'fig3.png', params)}")
  if "fig4" in f.figures:
    mesh = parallel.make_mesh(config)
    consts = parallel.place_replicated(mesh, trained_run.constants(source, config))
    with sources.listed_once():  # The training split, read twice, listed and checked once.
      png, rows = write_fig4(out, config, params, mesh, consts, files=f.queries,
                             num_queries=f.num_queries, k=f.neighbours, max_train=f.max_train)
    print(f"Figure 4 (fc7 of step {step}) -> {png}")
    for row in rows:
      print(f"  {row['query']}: " + ", ".join(f"{n['distance']:.1f}" for n in row["neighbours"]))


if __name__ == "__main__":
  from alexnet_jax.faults import logs
  common.define_flags()
  flags.adopt_module_key_flags(common)  # Listed by --help, as this command's own.
  flags.DEFINE_string("out", None, "Folder for fig3.png, fig4.png and fig4.json.", required=True)
  flags.DEFINE_list("figures", ["fig3", "fig4"], "Which figures.")
  flags.DEFINE_list("queries", [], "Query image files for figure 4 (default: evaluation images).")
  flags.DEFINE_integer("num_queries", 5, "Evaluation images used as queries without --queries.")
  flags.DEFINE_integer("neighbours", 6, "Nearest training images per query (the paper: 6).")
  flags.DEFINE_integer("max_train", 0, "Search only the first N training images (0: all).")
  app.run(logs.one_line_errors(main, "tools.figures"))
