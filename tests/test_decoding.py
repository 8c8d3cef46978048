"""data/decoding.py: greyscale and PNG input, the ops eagerly and in tf.data, the reduced-size
decode and the antialiased resize against PIL."""
import os

import numpy as np
from PIL import Image
import tensorflow as tf

from alexnet_jax.data import decoding
from tests.small_data import GREY, SAMPLES, needs_samples


@needs_samples
def test_greyscale_jpeg_and_png_come_out_rgb(tmp_path):
  for name in GREY:
    image = decoding.decode_and_centre_crop(tf.io.read_file(str(SAMPLES / f"{name}.JPEG")), 256)
    assert image.shape == (256, 256, 3)
    np.testing.assert_array_equal(image[..., 0], image[..., 2])
  grey = np.arange(40 * 30, dtype=np.uint8).reshape(40, 30) % 251
  Image.fromarray(grey).save(tmp_path / "g.png")
  image = decoding.decode_and_centre_crop(tf.io.read_file(str(tmp_path / "g.png")), 30).numpy()
  np.testing.assert_array_equal(image, np.repeat(grey[5:35, :, None], 3, axis=2))


def _in_tf_data(fn, *args):
  ds = tf.data.Dataset.from_tensors(tuple(args)).map(fn)
  return next(iter(ds.as_numpy_iterator()))


@needs_samples
def test_ops_equal_eagerly_and_in_tf_data():
  data = tf.constant((SAMPLES / "n01440764_tench.JPEG").read_bytes())
  big = tf.constant(sorted(SAMPLES.glob("*.JPEG"), key=os.path.getsize)[-1].read_bytes())
  ops = [
      (lambda d: decoding.decode_and_centre_crop(d, 256), (data,)),
      (lambda d: decoding.decode_and_centre_crop(d, 96), (big,)),  # DCT-scaled decode.
  ]
  for fn, args in ops:
    np.testing.assert_array_equal(fn(*args).numpy(), _in_tf_data(fn, *args))


@needs_samples
def test_reduced_size_decode_is_close_to_full_decode():
  photo = sorted(SAMPLES.glob("*.JPEG"), key=os.path.getsize)[-1]
  rgb = Image.open(photo).convert("RGB")
  side = min(rgb.size)
  assert side >= 2 * 256, "Pick a photo large enough to take the fast DCT-scaled path."
  box = ((rgb.width - side) // 2, (rgb.height - side) // 2)
  square = rgb.crop((*box, box[0] + side, box[1] + side))
  full, lanczos = [np.asarray(square.resize((256, 256), f), np.float32)
                   for f in (Image.BILINEAR, Image.LANCZOS)]
  ours = decoding.decode_and_centre_crop(tf.constant(photo.read_bytes()), 256, "fast").numpy()
  # DCT scaling + bilinear departs from a full decode + PIL's bilinear by less than PIL's own
  # Lanczos filter does (3.7 vs 4.1 grey levels on this photo): a choice of filter, no more.
  assert np.abs(ours.astype(np.float32) - full).mean() < np.abs(lanczos - full).mean()


def _pil_256(photo):
  """PIL's answer: the centre square of the full decode, bilinear (antialiased) to 256."""
  rgb = Image.open(photo).convert("RGB")
  side = min(rgb.size)
  box = ((rgb.width - side) // 2, (rgb.height - side) // 2)
  square = rgb.crop((*box, box[0] + side, box[1] + side))
  return np.asarray(square.resize((256, 256), Image.BILINEAR), np.float32)


@needs_samples
def test_antialiased_resize_is_pils_and_the_fast_one_is_not():
  """Every sample photo: the default departs from PIL's bilinear by under 2 grey levels on
  average; the fast resize departs by more, most where thin stripes alias."""
  diffs = {"antialias": [], "fast": []}
  for photo in sorted(SAMPLES.glob("*.JPEG")):
    pil = _pil_256(photo)
    for resize, out in diffs.items():
      ours = decoding.decode_and_centre_crop(tf.constant(photo.read_bytes()), 256, resize)
      out.append(float(np.abs(ours.numpy().astype(np.float32) - pil).mean()))
  antialias, fast = np.array(diffs["antialias"]), np.array(diffs["fast"])
  assert antialias.max() < 2.0, (antialias.max(), antialias.mean())
  assert fast.mean() > 1.5 * antialias.mean() and fast.max() > 5.0, (fast.mean(), fast.max())
