"""The generated set (`ensure_generated`): one (shape, texture) pair a class at a random place,
size, angle and colour, written once as JPEG folders that are a function of
config.data.generated alone; docs/design.md, "The generated set"."""
import functools
import hashlib
import json
import os
import shutil
import tempfile

import numpy as np
from PIL import Image, ImageDraw

from alexnet_jax import errors
from alexnet_jax.configs import common

SHAPES = ("disc", "square", "triangle", "ring", "cross", "diamond", "star")
TEXTURES = ("solid", "hstripes", "vstripes", "checker", "dots")
MAX_CLASSES = len(SHAPES) * len(TEXTURES)  # 7 and 5 are coprime: k -> (k%7, k%5) is unique.
SPLITS = ("train", "val")


def class_names(num_classes):
  if not 1 <= num_classes <= MAX_CLASSES:
    raise errors.ConfigError(
        f"config.data.generated.num_classes={num_classes}: the generated set has "
        f"between 1 and {MAX_CLASSES} classes (7 shapes x 5 textures).")
  return [f"{k:02d}_{SHAPES[k % len(SHAPES)]}_{TEXTURES[k % len(TEXTURES)]}"
          for k in range(num_classes)]


def _shape_mask(shape, size, rng):
  r = rng.uniform(0.16, 0.36) * size
  cx, cy = rng.uniform(r * 0.8, size - r * 0.8, size=2)
  # Rotations stay within +-20 degrees so that a square stays distinct from a diamond.
  angle = rng.uniform(-np.pi / 9, np.pi / 9)
  mask = Image.new("L", (size, size), 0)
  draw = ImageDraw.Draw(mask)
  if shape in ("disc", "ring"):
    draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
    if shape == "ring":
      inner = 0.55 * r
      draw.ellipse([cx - inner, cy - inner, cx + inner, cy + inner], fill=0)
  elif shape == "cross":
    w = 0.33 * r
    for arm in ([(-r, -w), (r, -w), (r, w), (-r, w)], [(-w, -r), (w, -r), (w, r), (-w, r)]):
      c, s = np.cos(angle), np.sin(angle)
      draw.polygon([(cx + x * c - y * s, cy + x * s + y * c) for x, y in arm], fill=255)
  else:  # A regular figure of k vertices; a star's alternate inward.
    k = {"triangle": 3, "square": 4, "diamond": 4, "star": 10}[shape]
    t = angle + np.pi / 4 * (shape == "square") + np.arange(k) * 2 * np.pi / k
    radii = np.where(np.arange(k) % 2 == 0, r, 0.45 * r) if shape == "star" else np.full(k, r)
    draw.polygon(list(zip(cx + radii * np.cos(t), cy + radii * np.sin(t))), fill=255)
  return np.asarray(mask, np.float32) / 255.0


@functools.lru_cache(maxsize=4)
def _noise(size):
  """A fixed tile of sensor-like noise; images take it at a random cyclic shift."""
  return np.random.default_rng(0).integers(-10, 11, size=(3, 2 * size, 2 * size), dtype=np.int8)


def _texture(texture, size, rng):
  """A 0/1 pattern [size, size] that picks between the two foreground colours."""
  period = np.float32(rng.uniform(10, 22))
  phase = np.float32(rng.uniform(0, period))
  t = (np.arange(size, dtype=np.float32) + phase) % period  # Separable: rows x columns.
  half, d = t < period / 2, (t - period / 2) ** 2
  return {"solid": np.zeros((1, 1), bool), "hstripes": half[:, None], "vstripes": half[None, :],
          "checker": half[:, None] ^ half[None, :],
          "dots": d[:, None] + d[None, :] < (period / 3.2) ** 2}[texture].astype(np.float32)


def _colour(rng, lo, hi):
  return (rng.uniform(lo, hi) * rng.uniform(0.35, 1.0, size=3)).astype(np.float32)[:, None, None]


def draw_image(label, size, rng):
  """One uint8 [size, size, 3] image of class `label`, drawn channels-first (faster)."""
  shape, texture = SHAPES[label % len(SHAPES)], TEXTURES[label % len(TEXTURES)]
  direction = rng.uniform(0, 2 * np.pi)
  ramp = np.arange(size, dtype=np.float32) / size - 0.5
  ramp = np.cos(direction) * ramp[None, :] + np.sin(direction) * ramp[:, None]
  dark_background = rng.uniform() < 0.5
  base = _colour(rng, 20, 110) if dark_background else _colour(rng, 150, 255)
  tilt = (50 * rng.uniform(-1, 1, size=3)).astype(np.float32)[:, None, None]
  fg_a = _colour(rng, 170, 255) if dark_background else _colour(rng, 10, 100)
  fg_b = (fg_a * np.float32(rng.uniform(0.25, 0.55)) if dark_background else
          255 - (255 - fg_a) * 0.35)
  pattern = _texture(texture, size, rng)
  mask = _shape_mask(shape, size, rng)
  # background + mask (fg_a + pattern (fg_b - fg_a) - background), in two reused buffers.
  image, scratch = _buffers(size)
  np.multiply(ramp, tilt, out=image)
  image += base
  np.multiply(pattern, fg_b - fg_a, out=scratch)
  scratch += fg_a
  scratch -= image
  scratch *= mask
  image += scratch
  dy, dx = rng.integers(0, size, size=2)
  image += _noise(size)[:, dy:dy + size, dx:dx + size]
  image += 0.5
  np.clip(image, 0, 255, out=image)
  return image.astype(np.uint8).transpose(1, 2, 0)


@functools.lru_cache(maxsize=4)
def _buffers(size):
  return np.empty((3, size, size), np.float32), np.empty((3, size, size), np.float32)


def _settings(gen):
  keys = ("seed", "num_classes", "image_size", "train_per_class", "val_per_class")
  return dict({k: int(gen[k]) for k in keys}, version=2)


def root_dir(config):
  """Where the generated set for these settings lives (a hash of the settings)."""
  settings = _settings(config.data.generated)
  digest = hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]
  return os.path.join(cache_dir(config), "generated", digest)


def cache_dir(config):
  return os.path.expanduser(config.data.cache_dir or common.CACHE_DIR)


def ensure_generated(config):
  """Writes the generated set on first use (atomically) and returns its root folder."""
  root = root_dir(config)
  if os.path.exists(os.path.join(root, "settings.json")):
    return root
  settings = _settings(config.data.generated)
  names = class_names(settings["num_classes"])
  os.makedirs(os.path.dirname(root), exist_ok=True)
  tmp = tempfile.mkdtemp(prefix="tmp-", dir=os.path.dirname(root))
  for split_id, split in enumerate(SPLITS):  # ~2 ms an image: 3,500 in seconds, no pool needed.
    for label, name in enumerate(names):
      os.makedirs(os.path.join(tmp, split, name))
      for i in range(settings[f"{split}_per_class"]):
        image = draw_image(label, settings["image_size"],
                           np.random.default_rng([settings["seed"], split_id, label, i]))
        Image.fromarray(image).save(os.path.join(tmp, split, name, f"{i:05d}.jpg"), quality=90)
  with open(os.path.join(tmp, "settings.json"), "w") as f:
    json.dump(settings, f, indent=2)
  try:
    os.rename(tmp, root)
  except OSError:  # Another process finished first; its files are identical.
    shutil.rmtree(tmp, ignore_errors=True)
  return root
