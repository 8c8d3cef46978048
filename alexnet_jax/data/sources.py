"""Where images come from (TFDS, image folders, ImageNet's layouts, Tiny ImageNet, the
generated set): `open_split` gives a `Split`, indexed (a file list) or streamed (TFDS), and
`records` reads either as (encoded image, label)."""
import contextlib
import dataclasses
import json
import os
import re
from typing import Any, Optional

import numpy as np
import tensorflow as tf

from alexnet_jax import errors
from alexnet_jax.data import decoding
from alexnet_jax.data import files
from alexnet_jax.data import generated
from alexnet_jax.data import imagenet_layouts
from alexnet_jax.data import tiny_imagenet

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
DEFAULT_EVAL_SPLIT = {"tfds": "validation", "folder": "val", "generated": "val",
                      "tiny_imagenet": "val", "imagenet": "val"}
SOURCES = tuple(DEFAULT_EVAL_SPLIT)
# Files a manual-download TFDS dataset needs in its manual directory, to check before building.
MANUAL_FILES = {"imagenet2012": ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar")}
# In a copy data.prepare writes: the mark while it writes, the manifest (counts) once it is done.
PREPARING, MANIFEST = "prepare_in_progress.json", "manifest.json"
ROOT_HOLDS = {  # What config.data.root names, for each source that needs one.
    "folder": "a folder holding <root>/<split>/<class>/*.jpg (e.g. --config.data.root="
              "/data/imagenet256)",
    "tiny_imagenet": "the tiny-imagenet-200 folder holding wnids.txt, words.txt, train/ and val/",
    "imagenet": "the folder holding the ILSVRC2012 tars, the Kaggle download (ILSVRC/, LOC_*) "
                "or train/ and a flat val/ with their labels file"}


@dataclasses.dataclass
class Split:
  """One split of one source. Indexed splits fill `paths`; streamed ones `builder`."""
  name: str
  num_examples: int
  class_names: list
  paths: Optional[np.ndarray] = None   # [N] str, indexed splits.
  labels: Optional[np.ndarray] = None  # [N] int32, indexed splits.
  builder: Any = None                  # tfds builder, streamed splits.


_LISTED = None  # Within listed_once: {(data config, split, checked): Split}.


@contextlib.contextmanager
def listed_once():
  """Within it each split is listed (and checked) once: 1.28M files take minutes to walk."""
  global _LISTED
  outer = _LISTED
  _LISTED = {} if outer is None else outer
  try:
    yield
  finally:
    _LISTED = outer


def _remembered(kind, config, split, make):
  if _LISTED is None:
    return make()
  key = (kind, json.dumps(config.data.to_dict(), sort_keys=True, default=str), split)
  if key not in _LISTED:
    _LISTED[key] = make()
  return dataclasses.replace(_LISTED[key])  # Callers may narrow their copy.


def eval_split_name(config):
  return config.data.eval_split or DEFAULT_EVAL_SPLIT[config.data.source]


def open_split(config, split):
  """`split` of config.data.source, an indexed one cut to max_*_per_class images a class."""
  return _remembered("listed", config, split, lambda: _open_split(config, split))


def _open_split(config, split):
  d = config.data
  if d.source == "tfds":
    builder = tfds_builder(config)
    if split not in builder.info.splits:
      raise errors.ConfigError(f"TFDS dataset {d.name!r} has splits {sorted(builder.info.splits)}, "
                               f"not {split!r} (config.data.train_split / config.data.eval_split).")
    names = builder.info.features[d.label_key].names
    return Split(split, builder.info.splits[split].num_examples, names, builder=builder)
  if d.source not in SOURCES:
    raise errors.ConfigError(f"config.data.source={d.source!r}: choose one of {SOURCES}.")
  if d.source != "generated" and not d.root:
    raise errors.ConfigError(
        f"config.data.source={d.source!r} needs config.data.root: {ROOT_HOLDS[d.source]}.")
  if d.source in ("tiny_imagenet", "imagenet") and split not in imagenet_layouts.SPLITS:
    raise errors.ConfigError(f"config.data.source={d.source!r} has the labelled splits "
                             f"{imagenet_layouts.SPLITS}, not {split!r} (config.data.train_split "
                             "/ config.data.eval_split).")
  if d.source == "generated":
    indexed = list_folder(generated.ensure_generated(config), split)
  elif d.source == "folder":
    indexed = list_folder(os.path.expanduser(d.root), split)
  elif d.source == "tiny_imagenet":
    indexed = tiny_imagenet.read_split(d.root, split, Split)
  else:
    indexed = imagenet_layouts.read_split(d.root, split, Split, d.extract_dir)
  limit = d.max_train_per_class if split == d.train_split else d.max_eval_per_class
  if not limit:
    return indexed
  keep = np.zeros(indexed.num_examples, bool)
  for label in np.unique(indexed.labels):
    keep[np.flatnonzero(indexed.labels == label)[:limit]] = True
  return _narrowed(indexed, keep)


def _narrowed(split, keep):
  return dataclasses.replace(split, num_examples=int(keep.sum()), paths=split.paths[keep],
                             labels=split.labels[keep])


def open_checked_split(config, name):
  """open_split, without the files that do not decode under on_corrupt="skip" (said)."""
  if config.data.on_corrupt not in ("stop", "skip"):
    raise errors.ConfigError(f"config.data.on_corrupt={config.data.on_corrupt!r}: 'stop' or "
                             "'skip'.")
  return _remembered("checked", config, name, lambda: _checked(config, name))


def _checked(config, name):
  split = open_split(config, name)
  bad = (find_unreadable(split.paths, config.data.threads)
         if config.data.on_corrupt == "skip" and split.paths is not None else [])
  if not bad:
    return split
  print(f"Skipping {len(bad)} unreadable file(s) of {len(split.paths)} in split {name!r} "
        "(config.data.on_corrupt='skip'):\n" + "".join(f"  {p}: {e}\n" for p, e in bad[:20]),
        flush=True)
  return _narrowed(split, ~np.isin(split.paths, [p for p, _ in bad]))


def list_folder(root, split):
  """root/<split>/<class>/*.{jpg,jpeg,png}; class ids from the sorted class folder names."""
  folder = os.path.join(root, split)
  if not os.path.isdir(folder):
    raise errors.MissingFileError(
        f"No split folder {folder!r}: an image folder dataset needs {root}/<split>/<class>/*.jpg "
        "(check config.data.root and the split names config.data.train_split / "
        "config.data.eval_split).")
  classes, extensions = class_files(folder), ", ".join(IMAGE_EXTENSIONS)
  _check_prepared(root, split, {name: len(names) for name, names in classes.items()})
  paths, labels = [], []
  for label, (name, names) in enumerate(classes.items()):
    if not names:
      raise errors.MissingFileError(
          f"Class folder {os.path.join(folder, name)} holds no images ({extensions}): add its "
          f"images or remove the folder (each folder under {folder} is a class).")
    paths += [os.path.join(folder, name, f) for f in names]
    labels += [label] * len(names)
  if not paths:
    raise errors.MissingFileError(f"No images ({extensions}) under {folder}/<class>/.")
  return Split(split, len(paths), list(classes), np.array(paths), np.array(labels, np.int32))


def class_files(folder):
  """{class folder: its image files' names, sorted} of folder/<class>/, in sorted class order."""
  names = sorted(d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d)))
  return {name: files.images_in(os.path.join(folder, name), IMAGE_EXTENSIONS) for name in names}


def _check_prepared(root, split, counts):
  """Refuses a data.prepare copy unfinished, or whose split differs from its manifest."""
  rerun = "rerun the data.prepare command that wrote it, which goes on from the files written"
  if os.path.exists(os.path.join(root, PREPARING)):
    raise errors.ConfigError(f"{root} is a copy that data.prepare started and did not finish "
                             f"({PREPARING} is there): {rerun}.")
  path = os.path.join(root, MANIFEST)
  if not os.path.isfile(path):
    return
  with open(path) as f:
    written = json.load(f)["splits"].get(split)
  if written is not None and written != counts:
    differ = min(c for c in {*written, *counts} if written.get(c) != counts.get(c))
    raise errors.ConfigError(
        f"{os.path.join(root, split, differ)} holds {counts.get(differ, 0)} images, {path} "
        f"counts {written.get(differ, 0)}: the copy changed since data.prepare wrote it; "
        f"{rerun}.")


def tfds_builder(config):
  """config.data.name's TFDS builder, built (from the manual directory) the first time."""
  import tensorflow_datasets as tfds  # Imported here: only this source needs it.
  d = config.data
  data_dir = os.path.expanduser(d.tfds_data_dir) if d.tfds_data_dir else None
  builder = tfds.builder(d.name, data_dir=data_dir)
  if builder.is_prepared():
    return builder
  manual_dir = os.path.expanduser(d.manual_dir or
                                  os.path.join(builder.data_dir_root, "downloads", "manual"))
  missing = [p for p in (os.path.join(manual_dir, f) for f in MANUAL_FILES.get(d.name, ()))
             if not os.path.exists(p)]
  if missing:
    raise errors.MissingFileError(
        f"TFDS {d.name!r} is not prepared in {builder.data_dir} and its manual download "
        f"is missing. Looked for:\n" + "".join(f"  {p}\n" for p in missing) +
        "Get them from https://image-net.org/download-images (free registration; ImageNet Large-"
        "scale Visual Recognition Challenge 2012, 'Training images (Task 1 & 2)' and 'Validation "
        "images (all tasks)'), put them in that folder or point --config.data.manual_dir at "
        "theirs, and run again; the first run builds the TFDS records (hours for the full set). "
        "Or try the pipeline without them: --config.data.source=generated.")
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
  return builder


def records(config, split, *, slice_index=0, slice_count=1, indices=None, file_seed=None):
  """(encoded image, int32 label) of one of `slice_count` disjoint slices of `split` in stored
  order (a streamed one's files in `file_seed`'s order), or of an indexed split's `indices`
  (int64, or tuples led by one whose rest follows the label)."""
  d = config.data
  if indices is None and split.builder is not None:
    import tensorflow_datasets as tfds
    ds = split.builder.as_dataset(  # One file at a time: the order depends on the seed alone.
        split=tfds.even_splits(split.name, n=slice_count)[slice_index],
        shuffle_files=file_seed is not None, decoders={d.image_key: tfds.decode.SkipDecoding()},
        read_config=tfds.ReadConfig(interleave_cycle_length=1, shuffle_seed=file_seed,
                                    shuffle_reshuffle_each_iteration=False))
    return ds.map(lambda ex: (ex[d.image_key], tf.cast(ex[d.label_key], tf.int32)))
  if indices is None:
    lo, hi = slice_bounds(split.num_examples, slice_count)[slice_index:slice_index + 2]
    indices = tf.data.Dataset.range(lo, hi)
  paths, labels = tf.constant(split.paths), tf.constant(split.labels)
  return indices.map(
      lambda i, *rest: (tf.io.read_file(tf.gather(paths, i)), tf.gather(labels, i), *rest))


def slice_sizes(config, split, slice_count):
  """Examples of `split` in each of `slice_count` slices, as `records` cuts them."""
  if split.builder is not None:
    import tensorflow_datasets as tfds
    return [split.builder.info.splits[s].num_examples
            for s in tfds.even_splits(split.name, n=slice_count)]
  bounds = slice_bounds(split.num_examples, slice_count)
  return [int(b - a) for a, b in zip(bounds[:-1], bounds[1:])]


def slice_bounds(n, slice_count):
  return np.linspace(0, n, slice_count + 1).astype(np.int64)


def find_unreadable(paths, threads=0):
  """[(path, error)] of the files the pipeline's decoder (at 1/8 scale) refuses."""
  paths = np.asarray(paths)
  decode = lambda i: decoding.decode_and_centre_crop(tf.io.read_file(tf.gather(paths, i)), 32)
  # The sum keeps the decode alive: grappler would prune it.
  ds = tf.data.Dataset.range(len(paths)).map(
      lambda i: (i, tf.reduce_sum(decode(i))),
      num_parallel_calls=threads or tf.data.AUTOTUNE).ignore_errors()
  good = np.zeros(len(paths), bool)
  for i, _ in ds.as_numpy_iterator():
    good[i] = True
  return [(str(p), decode_error(p)) for p in paths[~good]]


def as_numpy(ds, name, paths, then, threads=0):
  """`ds` as NumPy; a failed decode stops with the files of split `name` that do not decode (and
  `then`, what to do next), or as it is when they all do (a bug)."""
  try:
    yield from ds.as_numpy_iterator()
  except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError) as e:
    bad = find_unreadable(paths, threads) if paths is not None else []
    if not bad:
      raise
    raise errors.ConfigError(
        f"{len(bad)} file(s) of split {name!r} cannot be decoded:\n" +
        "".join(f"  {p}: {m}\n" for p, m in bad[:20]) +
        f"Delete or replace them, or set --config.data.on_corrupt=skip{then}.") from e


def decode_error(path):
  """The error message decoding `path` gives, or None when it decodes."""
  try:
    decoding.decode_and_centre_crop(tf.io.read_file(str(path)), 32)
  except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError, tf.errors.UnknownError) as e:
    message = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", e.message.strip().splitlines()[0])
    return re.sub(r"\s*\[Op:.*$", "", message)
  return None
