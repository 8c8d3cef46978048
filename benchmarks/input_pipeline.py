r"""Images/s and host CPU ms per image of the training input pipeline (section 4.1's host half)
against a PIL + torch DataLoader baseline, and what decoding a prepared 256x256 JPEG costs done
otherwise.

    .venv/bin/python benchmarks/input_pipeline.py [--n=1000] [--batch=128] [--parts ...]
    .venv/bin/python benchmarks/input_pipeline.py --n 32 --batch 8 --repeats 1 --out=/tmp/p.json

"pipelines": ours decodes, rescales the shorter side to 256 and takes the centre 256x256, and
batches uint8 images: the crops, mirrors, mean and colour noise run on the accelerator
(preprocess.py). The PIL baseline does all of 4.1 on the host (random 227x227 crop, mirror,
float32, mean image, PCA noise), as a DataLoader pipeline without a device half must; it runs
only where torch is installed. Input: the ImageNet photos of ../shared/data/imagenet_samples at
their real sizes, repeated to --n files; and the same photos after `alexnet_jax.data.prepare`
(256x256 JPEGs).

"decode": on the prepared 256x256 files, one thread each, interleaved --repeats times (the
median kept): the project's iterator, the pipeline's decoder and the alternatives to it from
bytes already in memory (PIL; tf.io.decode_jpeg; dct_method="INTEGER_FAST";
tf.image.decode_and_crop_jpeg of one 224x224 crop), and the iterator gathering from the decoded
cache (config.data.decoded_cache="memory"); each with its mean absolute difference from the
pipeline's decode in grey levels. torch is imported only here, never by the package.
"""
import argparse
import io
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ANCHOR = ("Anchors on the project's 2-core machine, 1,000 ImageNet photos: PIL pipeline "
          "~225-320 images/s in one process, ~410-480 with a 2-worker DataLoader")
SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "data" / "imagenet_samples"


def cpu_seconds():
  own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
  return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def make_folder(root, n):
  """root/train/<wnid>/<k>.JPEG: the sample photos, linked over and over to n files."""
  photos = sorted(SAMPLES.glob("*.JPEG"))
  for k in range(n):
    photo = photos[k % len(photos)]
    folder = root / "train" / photo.name.split("_")[0]
    folder.mkdir(parents=True, exist_ok=True)
    os.symlink(photo, folder / f"{k:05d}.JPEG")


def make_stats(path):
  rng = np.random.default_rng(0)
  eigvec = np.linalg.qr(rng.normal(size=(3, 3)))[0].astype(np.float32)
  np.savez(path, mean_image=rng.uniform(90, 130, (256, 256, 3)).astype(np.float32),
           channel_mean=np.float32([120, 115, 100]), eigval=np.float32([121.8, 37.1, 19.7]) ** 2,
           eigvec=eigvec, num_images=np.int64(0))


def time_batches(iterator, num_batches, batch, warmup=2):
  for _ in range(warmup):
    next(iterator)
  t, c = time.perf_counter(), cpu_seconds()
  for _ in range(num_batches):
    next(iterator)
  wall, cpu = time.perf_counter() - t, cpu_seconds() - c
  return num_batches * batch / wall, cpu / (num_batches * batch) * 1e3


def ours(root, stats_file, threads, batch, num_batches, resize="antialias"):
  from alexnet_jax.data import input_pipeline
  from alexnet_jax.configs import paper
  config = paper.get_config()
  config.data.update(source="folder", root=str(root), stats_file=str(stats_file),
                     threads=threads, resize=resize)
  it = input_pipeline.train_iterator(config, batch_size=batch)
  return time_batches(it, num_batches, batch)


def torch_pipeline(root, stats_file, workers, batch, num_batches, resize=None):
  import torch
  from PIL import Image
  torch.set_num_threads(1)
  stats = np.load(stats_file)
  mean, eigval, eigvec = stats["mean_image"], stats["eigval"], stats["eigvec"]
  files = sorted(str(p) for p in Path(root, "train").rglob("*.JPEG"))

  class Photos(torch.utils.data.Dataset):
    def __len__(self):
      return len(files)

    def __getitem__(self, k):
      rng = np.random.default_rng(k)
      image = Image.open(files[k]).convert("RGB")
      w, h = image.size
      s = 256 / min(w, h)
      image = image.resize((max(256, round(w * s)), max(256, round(h * s))), Image.BILINEAR)
      left, top = (image.width - 256) // 2, (image.height - 256) // 2
      x = np.asarray(image.crop((left, top, left + 256, top + 256)), np.float32) - mean
      oy, ox = rng.integers(0, 30, size=2)
      x = x[oy:oy + 227, ox:ox + 227]
      if rng.uniform() < 0.5:
        x = x[:, ::-1]
      x = x + eigvec @ (rng.normal(0, 0.1, 3) * np.sqrt(eigval))
      return np.ascontiguousarray(x, np.float32), 0

  loader = torch.utils.data.DataLoader(Photos(), batch_size=batch, shuffle=True,
                                       num_workers=workers, drop_last=True)
  it = iter(loader)
  return time_batches(it, num_batches, batch)


# The decode study: one thread each, on the prepared 256x256 files.

CROP = 224  # One training crop (config.model.image_size); the step's offsets span all 256.


def one_thread():
  import tensorflow as tf
  options = tf.data.Options()
  options.deterministic = True
  options.threading.max_intra_op_parallelism = 1
  options.threading.private_threadpool_size = 1
  return options


def tf_decoders():
  """name -> (encoded bytes -> uint8 image, the window of the reference it gives or None).
  TensorFlow's dct_method "" is INTEGER_FAST (libjpeg's JDCT_IFAST); PIL's is JDCT_ISLOW,
  TensorFlow's INTEGER_ACCURATE."""
  import tensorflow as tf
  from alexnet_jax.data import decoding
  lo = (256 - CROP) // 2
  window = (slice(lo, lo + CROP), slice(lo, lo + CROP))
  jpeg = lambda method: lambda x: tf.io.decode_jpeg(x, channels=3, dct_method=method)
  return {
      "pipeline's decoder (decode_and_centre_crop)": (
          lambda x: decoding.decode_and_centre_crop(x, 256), None),
      "tf.io.decode_jpeg alone (dct_method '')": (jpeg(""), None),
      "tf.io.decode_jpeg, dct_method=INTEGER_FAST": (jpeg("INTEGER_FAST"), None),
      "tf.io.decode_jpeg, dct_method=INTEGER_ACCURATE": (jpeg("INTEGER_ACCURATE"), None),
      f"tf.image.decode_and_crop_jpeg, centre {CROP}x{CROP}": (
          lambda x: tf.image.decode_and_crop_jpeg(x, [lo, lo, CROP, CROP], channels=3), window)}


def timed(run, count):
  """(images/s, CPU ms per image, what run() returned)."""
  t, c = time.perf_counter(), cpu_seconds()
  out = run()
  wall, cpu = time.perf_counter() - t, cpu_seconds() - c
  return count / wall, cpu / count * 1e3, out


def tf_decode(blobs, decode, batch):
  """The first batch untimed (it builds the pipeline), the others timed."""
  import tensorflow as tf
  ds = tf.data.Dataset.from_tensor_slices(blobs).map(decode).batch(batch)
  ds = ds.with_options(one_thread()).as_numpy_iterator()
  first = next(ds)
  rate, cpu_ms, rest = timed(lambda: np.concatenate(list(ds)), len(blobs) - len(first))
  return rate, cpu_ms, np.concatenate([first, rest])


def pil_decode(blobs):
  from PIL import Image
  return timed(lambda: np.stack([np.asarray(Image.open(io.BytesIO(b)).convert("RGB"))
                                 for b in blobs]), len(blobs))


def iterator_decode(config, batch, num_batches):
  """The project's train_iterator, one thread; its images and the split rows they are."""
  from alexnet_jax.data import input_pipeline
  from alexnet_jax.data import sources
  it = input_pipeline.train_iterator(config, batch_size=batch)
  for _ in range(2):
    next(it)
  rate, cpu_ms, images = timed(lambda: np.concatenate([next(it)["image"]
                                                       for _ in range(num_batches)]),
                               num_batches * batch)
  split = sources.open_split(config, config.data.train_split)
  rows = input_pipeline._indexed_train_indices(config, split, 0, 1, 0, batch)
  rows = np.fromiter(rows.take((2 + num_batches) * batch).as_numpy_iterator(), np.int64)
  return rate, cpu_ms, (images, rows[2 * batch:])


REFERENCE = "pipeline's decoder (decode_and_centre_crop)"
ITERATOR = "project's iterator (train_iterator), from files"
CACHED = "decoded cache (memory): train_iterator gathers"
PIL_CASE = "PIL Image.open().convert('RGB')"


def decode_study(root, batch, num_batches, repeats):
  """Rows (name, images/s median, CPU ms/image median, mean |difference| in grey levels)."""
  from alexnet_jax.configs import paper
  from alexnet_jax.data import sources
  config = paper.get_config()
  config.data.update(source="folder", root=str(root), threads=1)
  blobs = [Path(p).read_bytes() for p in sources.open_split(config, "train").paths]
  cached = paper.get_config()
  cached.data.update(config.data.to_dict(), decoded_cache="memory")
  cases = {ITERATOR: (lambda: iterator_decode(config, batch, num_batches), None)}
  for name, (decode, window) in tf_decoders().items():
    cases[name] = (lambda decode=decode: tf_decode(blobs, decode, batch), window)
  cases[PIL_CASE] = (lambda: pil_decode(blobs), None)
  cases[CACHED] = (lambda: iterator_decode(cached, batch, num_batches), None)
  reference = cases[REFERENCE][0]()[2].astype(np.int16)
  times, diffs = {name: [] for name in cases}, {}
  for _ in range(repeats):  # Interleaved, so that a change of the machine's load hits all.
    for name, (run, window) in cases.items():
      rate, cpu_ms, images = run()
      times[name].append((rate, cpu_ms))
      if isinstance(images, tuple):  # An iterator's images, in the order of their rows.
        images, rows = images
        want = reference[rows]
      else:
        want = reference if window is None else reference[(slice(None), *window)]
      diffs[name] = float(np.abs(images.astype(np.int16) - want).mean())
  return [(name, float(np.median([r for r, _ in times[name]])),
           float(np.median([c for _, c in times[name]])), diffs[name]) for name in cases]


ALONE = "tf.io.decode_jpeg alone (dct_method '')"
# Each alternative against what it would replace: a decode option against the same call
# without it, the bare decode and PIL against the pipeline's decoder.
BASELINES = {ALONE: REFERENCE, PIL_CASE: REFERENCE,
             "tf.io.decode_jpeg, dct_method=INTEGER_FAST": ALONE,
             "tf.io.decode_jpeg, dct_method=INTEGER_ACCURATE": ALONE,
             f"tf.image.decode_and_crop_jpeg, centre {CROP}x{CROP}": ALONE}


def verdicts(rows):
  """(name, baseline, CPU time saved, grey levels from the pipeline's decode, passes): by CPU
  time per image, what the host pays (images/s moves with the other jobs of a shared
  machine). A knob passes where it saves 10% or more and moves pixels by at most one grey
  level on average."""
  cpu = {name: cpu_ms for name, _, cpu_ms, _ in rows}
  diff = {name: d for name, _, _, d in rows}
  out = []
  for name, base in BASELINES.items():
    saving = 1 - cpu[name] / cpu[base]
    out.append((name, base, saving, diff[name], saving >= 0.10 and diff[name] <= 1.0))
  return out


def print_decode(rows, args, num_batches):
  print(f"\nDecoding the prepared 256x256 JPEGs, one thread each: {args.n} files, "
        f"{num_batches} batches of {args.batch} for the iterators, median of {args.repeats}")
  print(f"{'case':52s} {'images/s':>9s} {'CPU ms/image':>13s} {'|diff| grey':>12s}")
  for name, rate, cpu_ms, diff in rows:
    print(f"{name:52s} {rate:9.0f} {cpu_ms:13.3f} {diff:12.3f}")
  print("CPU time saved against what each would replace, and the rule (10% or more, at most "
        "1 grey level):")
  for name, base, saving, diff, passes in verdicts(rows):
    print(f"  {name} vs {base.split(' (')[0]}: {saving:+.0%}, {diff:.3f} grey levels: "
          f"{'passes' if passes else 'fails'}")


def pipelines(tmp, args, num_batches):
  """The first table: rows (name, images/s or None when skipped, CPU ms/image or None)."""
  print(f"{'pipeline':52s} {'images/s':>9s} {'CPU ms/image':>13s}")
  # config.data.resize: "antialias" (the default) or "fast" (alexnet_jax/data/decoding.py).
  cases = [
      ("tf.data, full-size JPEGs, 1 thread", ours, tmp / "photos", 1, "antialias"),
      ("tf.data, full-size JPEGs, 1 thread, resize=fast", ours, tmp / "photos", 1, "fast"),
      ("tf.data, full-size JPEGs, 2 threads", ours, tmp / "photos", 2, "antialias"),
      ("tf.data, full-size JPEGs, 2 threads, resize=fast", ours, tmp / "photos", 2, "fast"),
      ("tf.data, prepared 256x256 JPEGs, 1 thread", ours, tmp / "prepared", 1, "antialias"),
      ("tf.data, prepared 256x256 JPEGs, 2 threads", ours, tmp / "prepared", 2, "antialias"),
      ("PIL + torch DataLoader, in-process (num_workers=0)", torch_pipeline, tmp / "photos", 0,
       None),
      ("PIL + torch DataLoader, num_workers=2", torch_pipeline, tmp / "photos", 2, None),
  ]
  rows = []
  for name, fn, root, threads, resize in cases:
    try:
      rate, cpu_ms = fn(root, tmp / "stats.npz", threads, args.batch, num_batches, resize)
    except ImportError as e:  # torch is optional.
      print(f"{name:52s} skipped: {e}", flush=True)
      rows.append((name, None, None))
      continue
    if fn is torch_pipeline and threads:
      cpu_ms = None  # The workers are other processes.
    rows.append((name, rate, cpu_ms))
    cpu = f"{cpu_ms:13.2f}" if cpu_ms is not None else f"{'-':>13s}"
    print(f"{name:52s} {rate:9.0f} {cpu}", flush=True)
  print("(CPU ms/image counts every thread of this process; DataLoader workers are other "
        "processes: -)")
  print(ANCHOR)
  return rows


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--n", type=int, default=1000)
  parser.add_argument("--batch", type=int, default=128)
  parser.add_argument("--parts", nargs="+", default=["pipelines", "decode"],
                      choices=["pipelines", "decode"])
  parser.add_argument("--repeats", type=int, default=3, help="of the decode study")
  parser.add_argument("--out", default="", help="also write the rows to this JSON file")
  args = parser.parse_args()
  if not SAMPLES.is_dir():
    sys.exit(f"{SAMPLES} is absent: this benchmark needs the shared ImageNet photos.")
  num_batches = args.n // args.batch - 2
  if num_batches < 1:
    sys.exit(f"--n={args.n} leaves no timed batch of {args.batch} after 2 of warm-up.")
  import tensorflow as tf
  tf.config.set_visible_devices([], "GPU")
  from alexnet_jax.configs import paper
  from alexnet_jax.data import prepare
  result = {"n": args.n, "batch": args.batch, "cpus": os.cpu_count()}
  with tempfile.TemporaryDirectory() as tmp:
    tmp = Path(tmp)
    make_folder(tmp / "photos", args.n)
    make_stats(tmp / "stats.npz")
    config = paper.get_config()
    config.data.update(source="folder", root=str(tmp / "photos"))
    t = time.perf_counter()
    prepare.write_split(config, "train", str(tmp / "prepared"))
    result["prepare_s"] = time.perf_counter() - t
    from PIL import Image
    median_side = np.median([min(Image.open(p).size) for p in SAMPLES.glob("*.JPEG")])
    print(f"{args.n} photos (median side {median_side:.0f} px), batches of {args.batch}, "
          f"{num_batches} timed; {os.cpu_count()} CPUs; prepared to 256x256 JPEGs in "
          f"{result['prepare_s']:.1f} s, once", flush=True)
    keys = ("name", "images_per_s", "cpu_ms_per_image")
    if "pipelines" in args.parts:
      result["pipelines"] = [dict(zip(keys, r)) for r in pipelines(tmp, args, num_batches)]
    if "decode" in args.parts:
      rows = decode_study(tmp / "prepared", args.batch, num_batches, args.repeats)
      print_decode(rows, args, num_batches)
      result["decode"] = [dict(zip(keys + ("mean_abs_diff",), r)) for r in rows]
      result["verdicts"] = [dict(zip(("name", "baseline", "saving", "mean_abs_diff", "passes"), v))
                            for v in verdicts(rows)]
  if args.out:
    Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
  main()
