r"""Images/s and host CPU ms per image of the training input pipeline (section 4.1's host half)
against a PIL + torch DataLoader baseline.

    .venv/bin/python benchmarks/input_pipeline.py [--n=1000] [--batch=128]

Ours decodes, rescales the shorter side to 256 and takes the centre 256x256, and batches uint8
images: the crops, mirrors, mean and colour noise run on the accelerator (preprocess.py). The
PIL baseline does all of 4.1 on the host (random 227x227 crop, mirror, float32, mean image,
PCA noise), as a DataLoader pipeline without a device half must; it runs only where torch is
installed. Input: the ImageNet photos of ../shared/data/imagenet_samples at their real sizes,
repeated to --n files; and the same photos after `alexnet_jax.data.prepare` (256x256 JPEGs).
torch is imported only here, never by the package.
"""
import argparse
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
  from alexnet_jax import input_pipeline
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


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--n", type=int, default=1000)
  parser.add_argument("--batch", type=int, default=128)
  args = parser.parse_args()
  if not SAMPLES.is_dir():
    sys.exit(f"{SAMPLES} is absent: this benchmark needs the shared ImageNet photos.")
  num_batches = args.n // args.batch - 2
  import tensorflow as tf
  tf.config.set_visible_devices([], "GPU")
  from alexnet_jax.configs import paper
  from alexnet_jax.data import prepare
  with tempfile.TemporaryDirectory() as tmp:
    tmp = Path(tmp)
    make_folder(tmp / "photos", args.n)
    make_stats(tmp / "stats.npz")
    config = paper.get_config()
    config.data.update(source="folder", root=str(tmp / "photos"))
    t = time.perf_counter()
    prepare.write_split(config, "train", str(tmp / "prepared"))
    prepare_s = time.perf_counter() - t
    from PIL import Image
    median_side = np.median([min(Image.open(p).size) for p in SAMPLES.glob("*.JPEG")])
    print(f"{args.n} photos (median side {median_side:.0f} px), "
          f"batches of {args.batch}, {num_batches} timed; {os.cpu_count()} CPUs", flush=True)
    print(f"{'pipeline':52s} {'images/s':>9s} {'CPU ms/image':>13s}")
    # config.data.resize: "antialias" (the default) or "fast" (alexnet_jax/data/augment.py).
    rows = [
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
    for name, fn, root, threads, resize in rows:
      try:
        rate, cpu_ms = fn(root, tmp / "stats.npz", threads, args.batch, num_batches, resize)
      except ImportError as e:  # torch is optional.
        print(f"{name:52s} skipped: {e}", flush=True)
        continue
      cpu = f"{cpu_ms:13.2f}" if not (fn is torch_pipeline and threads) else f"{'-':>13s}"
      print(f"{name:52s} {rate:9.0f} {cpu}", flush=True)
    print(f"(prepare: {args.n} photos -> 256x256 JPEGs in {prepare_s:.1f} s, once. CPU ms/image "
          "counts every thread of this process; DataLoader workers are other processes: -)")
    print(ANCHOR)


if __name__ == "__main__":
  main()
