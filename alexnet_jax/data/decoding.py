"""Decoding for section 4.1 on the host, as TensorFlow functions for tf.data: encoded image
bytes to the uint8 [256, 256, 3] image ("rescaled the image such that the shorter side was of
length 256, and then cropped out the central 256x256 patch", section 2). The crops, mirrors,
mean subtraction and colour noise run on the device (alexnet_jax/preprocess.py).
"""
import tensorflow as tf


RESIZES = ("antialias", "fast")


def resize_of(config):
  """config.data.resize, checked."""
  resize = config.data.resize
  if resize not in RESIZES:
    raise ValueError(f"config.data.resize={resize!r}: use 'antialias' (the default) or 'fast'.")
  return resize


def _square_resize(image_HWC, size, resize="antialias"):
  """Resizes a square uint8 crop to size x size, uint8 (rounded).

  "antialias": bilinear with its filter widened by the shrink factor (what PIL's bilinear
  does), so every source pixel counts and thin stripes (fences, corn, a whale's grooves) do
  not alias. "fast": plain bilinear where the image shrinks by less than 2x (its JPEGs reach
  here DCT-scaled to less than 2x the target), antialiased only beyond; it reads just the
  4 nearest pixels, so stripes finer than 2 output pixels alias, and on ImageNet photos of
  them it differs from PIL's by 10-15 grey levels on average. Its advantage is speed:
  benchmarks/input_pipeline.py measures both.
  """
  side = tf.shape(image_HWC)[0]
  to_uint8 = lambda x: tf.cast(tf.clip_by_value(tf.round(x), 0, 255), tf.uint8)
  smooth = lambda: to_uint8(tf.image.resize(image_HWC, [size, size], method="bilinear",
                                            antialias=True))
  plain = lambda: to_uint8(tf.image.resize(image_HWC, [size, size], method="bilinear"))
  return tf.case([(tf.equal(side, size), lambda: image_HWC),
                  (side < 2 * size, smooth if resize == "antialias" else plain)],
                 default=smooth)


def _decode_jpeg_square(data, size, keep=1):
  """Decodes only the centre square of a JPEG, at 1/2, 1/4 or 1/8 scale where that still
  leaves at least `keep` x `size` pixels (libjpeg's DCT scaling: decoding is most of the cost).
  The DCT's reduction is a box-like filter: keep=2 leaves the last 2x or more of the shrink to
  the antialiased resize, which then matches PIL's to about a grey level."""
  shape = tf.io.extract_jpeg_shape(data)
  side = tf.minimum(shape[0], shape[1])
  # Branch b decodes at ratio 2**b; choose the largest b with side / 2**b >= keep * size.
  branch = tf.reduce_sum(tf.cast(side // tf.constant([2, 4, 8]) >= keep * size, tf.int32))

  def decode(ratio):
    def fn():
      h, w = -(-shape[0] // ratio), -(-shape[1] // ratio)  # libjpeg rounds scaled sizes up.
      s = tf.minimum(h, w)
      window = tf.stack([(h - s) // 2, (w - s) // 2, s, s])
      return tf.io.decode_and_crop_jpeg(data, window, channels=3, ratio=ratio)
    return fn

  return tf.switch_case(branch, [decode(1), decode(2), decode(4), decode(8)])


def _decode_other_square(data):
  image = tf.io.decode_image(data, channels=3, expand_animations=False)
  h, w = tf.shape(image)[0], tf.shape(image)[1]
  s = tf.minimum(h, w)
  return image[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]


def decode_and_centre_crop(data, size=256, resize="antialias"):
  """Encoded image bytes -> uint8 [size, size, 3]: the shorter side rescaled to `size`, then
  the central size x size patch (section 2's fixed resolution), rounded to whole grey levels;
  `resize` as config.data.resize (_square_resize). Greyscale comes out as 3 channels."""
  square = tf.cond(tf.io.is_jpeg(data),
                   lambda: _decode_jpeg_square(data, size, 2 if resize == "antialias" else 1),
                   lambda: _decode_other_square(data))
  return tf.ensure_shape(_square_resize(square, size, resize), [size, size, 3])
