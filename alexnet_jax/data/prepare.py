r"""A dataset written once at section 2's 256x256 as out/<split>/<class>/<name>.jpg, which
decodes several times faster than full-size photos; a killed copy goes on where it stopped
(docs/design.md, "Prepared copies"):

    python -m alexnet_jax.data.prepare --config=configs/paper.py --out=/data/imagenet256
    python -m alexnet_jax.main --config=configs/paper.py --workdir=workdirs/paper \
        --config.data.source=folder --config.data.root=/data/imagenet256 \
        --config.data.eval_split=validation
"""
import glob
import json
import os

import numpy as np
import tensorflow as tf

from alexnet_jax import errors
from alexnet_jax import progress
from alexnet_jax.data import decoding
from alexnet_jax.data import files
from alexnet_jax.data import sources

FIX = ("--out must be a writable folder with room for the copy; the same command then goes on "
       "from the images written.")


def class_folders(names):
  if sorted(names) == list(names) and len(set(names)) == len(names):
    return list(names)
  return [f"{k:04d}_{n}" for k, n in enumerate(names)]


def prepare(config, split_names, out, quality=95):
  """Writes the splits under `out`, marked unfinished until the manifest; {split: images}."""
  with sources.listed_once():
    for name in split_names:  # Labels, classes, tars: all checked before anything is written.
      sources.open_checked_split(config, name)
    manifest = _begin(config, split_names, out, quality)
    for name in split_names:
      write_split(config, name, out, quality)
      manifest["splits"][name] = {c: len(f) for c, f in
                                  sources.class_files(os.path.join(out, name)).items()}
  _write_file(os.path.join(out, sources.MANIFEST), json.dumps(manifest, indent=1).encode())
  os.remove(os.path.join(out, sources.PREPARING))
  return {name: sum(manifest["splits"][name].values()) for name in split_names}


def _begin(config, split_names, out, quality):
  """The manifest to fill, `out` marked unfinished; others' files there may be cut short."""
  d = config.data
  settings = dict(source=d.source, root=os.path.abspath(os.path.expanduser(d.root)) if d.root
                  else "", name=d.name if d.source == "tfds" else "",
                  resize_size=d.resize_size, resize=d.resize, quality=quality)
  manifest = {"settings": settings, "splits": {}}
  found = [os.path.join(out, n) for n in (sources.PREPARING, sources.MANIFEST)
           if os.path.isfile(os.path.join(out, n))]
  for path in found:
    with open(path) as f:
      before = json.load(f)
    changed = [f"{k} {before['settings'].get(k)!r}, now {v!r}" for k, v in settings.items()
               if before["settings"].get(k) != v]
    if changed:
      raise errors.ConfigError(f"{out} holds a copy data.prepare wrote with other settings "
                               f"({', '.join(changed)}; {path}): write to another --out, or "
                               "delete it first.")
    manifest["splits"].update(before["splits"])
  unknown = [n for n in split_names if os.path.exists(os.path.join(out, n))]
  if unknown and not found:
    raise errors.ConfigError(
        f"{os.path.join(out, unknown[0])} is there, but not written by data.prepare (no "
        f"{sources.MANIFEST} or {sources.PREPARING} in {out}): write to another --out, or "
        "delete it first.")
  _write_file(os.path.join(out, sources.PREPARING), json.dumps(manifest, indent=1).encode())
  return manifest


def write_split(config, split_name, out, quality=95):
  """Writes one split under out/<split_name>, keeping the images there; returns their count."""
  split = sources.open_checked_split(config, split_name)
  folder = os.path.join(out, split_name)
  # Class folders are made as their first image comes: the folder source refuses an empty one.
  folders = class_folders(split.class_names)
  done = _whole_files(folder)
  ds, todo, paths = _records_to_write(config, split, folders, done)
  size = config.data.resize_size

  def encode(data, label, stem):
    image = decoding.decode_and_centre_crop(data, size, decoding.resize_of(config))
    return tf.io.encode_jpeg(image, quality=quality), label, stem

  ds = ds.map(encode, num_parallel_calls=config.data.threads or tf.data.AUTOTUNE).prefetch(64)
  if done:
    print(f"{folder}: {len(done):,} images there already; writing the other {todo:,}.",
          flush=True)
  then = "; the same command then goes on from the images written"
  with progress.Progress(todo, f"writing {split_name}") as bar:
    for data, label, stem in sources.as_numpy(ds, split_name, paths, then, config.data.threads):
      _write_file(os.path.join(folder, folders[label], stem.decode() + ".jpg"), data)
      bar.update()
  count = sum(len(f) for f in sources.class_files(folder).values())
  if count != split.num_examples:
    raise errors.ConfigError(
        f"{folder} holds {count:,} images, split {split_name!r} {split.num_examples:,}: the "
        "others are of another copy; write to an empty --out.")
  return count


def _records_to_write(config, split, folders, done):
  """(data, label, stem) of the records not `done`, their count, their paths (TFDS: None)."""
  if split.builder is None:
    stems = np.array([os.path.splitext(os.path.basename(p))[0] for p in split.paths])
    todo = np.array([k for k, (label, stem) in enumerate(zip(split.labels, stems))
                     if f"{folders[label]}/{stem}.jpg" not in done], np.int64)
    indices = tf.data.Dataset.from_tensor_slices((todo, stems[todo]))
    return sources.records(config, split, indices=indices), len(todo), split.paths[todo]
  # A TFDS split streams: each record is read; those already written are dropped undecoded.
  ds = sources.records(config, split).enumerate().map(
      lambda k, ex: (*ex, tf.strings.as_string(k, width=8, fill="0")))
  if done:
    names = tf.constant(folders)
    written = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(
        sorted(done), np.ones(len(done), np.int64)), default_value=0)
    ds = ds.filter(lambda data, label, stem: tf.equal(written.lookup(
        tf.strings.join([tf.gather(names, label), "/", stem, ".jpg"])), 0))
  return ds, split.num_examples - len(done), None


def _whole_files(folder):
  """{"<class>/<file>"} of the images in folder/<class>/; what a kill left half-written goes."""
  if not os.path.isdir(folder):
    return set()
  for path in glob.glob(os.path.join(glob.escape(folder), "*", f"*{files.TMP}*")):
    os.remove(path)
  return {f"{c}/{f}" for c, names in sources.class_files(folder).items() for f in names}


def _write_file(path, data):
  with files.written(path, FIX) as f:
    f.write(data)


def main(argv):
  del argv
  from absl import flags
  f = flags.FLAGS
  splits = f.splits or [f.config.data.train_split, sources.eval_split_name(f.config)]
  for split, n in prepare(f.config, splits, f.out, f.quality).items():
    print(f"{split}: {n} images -> {os.path.join(f.out, split)}", flush=True)


if __name__ == "__main__":
  from absl import app
  from absl import flags
  from ml_collections import config_flags
  from alexnet_jax.faults import logs
  config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/paper.py.")
  flags.DEFINE_string("out", None, "Output folder.", required=True)
  flags.DEFINE_list("splits", [], "Splits to write (default: the train and eval splits).")
  flags.DEFINE_integer("quality", 95, "JPEG quality.")
  tf.config.set_visible_devices([], "GPU")
  app.run(logs.one_line_errors(main, "data.prepare"))
