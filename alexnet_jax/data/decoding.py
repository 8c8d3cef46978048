"""Section 2's fixed resolution for tf.data: `decode_and_centre_crop`, encoded bytes to uint8
[256, 256, 3], the shorter side rescaled to 256 and the central square kept."""
import functools

import tensorflow as tf

from alexnet_jax import errors


RESIZES = ("antialias", "fast")


def resize_of(config):
  """config.data.resize, checked."""
  resize = config.data.resize
  if resize not in RESIZES:
    raise errors.ConfigError(
        f"config.data.resize={resize!r}: use 'antialias' (the default) or 'fast'.")
  return resize


def _square_resize(image_HWC, size, resize="antialias"):
  """The "antialias" resize is PIL's bilinear; "fast" reads 4 pixels below a 2x shrink."""
  side = tf.shape(image_HWC)[0]
  bilinear = lambda antialias: lambda: tf.cast(tf.clip_by_value(tf.round(tf.image.resize(
      image_HWC, [size, size], method="bilinear", antialias=antialias)), 0, 255), tf.uint8)
  return tf.case([(tf.equal(side, size), lambda: image_HWC),
                  (side < 2 * size, bilinear(resize == "antialias"))], default=bilinear(True))


def _decode_jpeg_square(data, size, keep=1):
  """A JPEG's centre square, DCT-scaled by 1/2, 1/4 or 1/8 while `keep` x `size` pixels stay."""
  shape = tf.io.extract_jpeg_shape(data)
  side = tf.minimum(shape[0], shape[1])
  # Branch b decodes at ratio 2**b; choose the largest b with side / 2**b >= keep * size.
  branch = tf.reduce_sum(tf.cast(side // tf.constant([2, 4, 8]) >= keep * size, tf.int32))

  def decode(ratio):
    h, w = -(-shape[0] // ratio), -(-shape[1] // ratio)  # libjpeg rounds scaled sizes up.
    s = tf.minimum(h, w)
    window = tf.stack([(h - s) // 2, (w - s) // 2, s, s])
    return tf.io.decode_and_crop_jpeg(data, window, channels=3, ratio=ratio)

  return tf.switch_case(branch, [functools.partial(decode, r) for r in (1, 2, 4, 8)])


def _decode_other_square(data):
  image = tf.io.decode_image(data, channels=3, expand_animations=False)
  h, w = tf.shape(image)[0], tf.shape(image)[1]
  s = tf.minimum(h, w)
  return image[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]


def decode_and_centre_crop(data, size=256, resize="antialias"):
  """Encoded bytes (greyscale too) -> uint8 [size, size, 3], as section 2 rescales and crops."""
  square = tf.cond(tf.io.is_jpeg(data),
                   lambda: _decode_jpeg_square(data, size, 2 if resize == "antialias" else 1),
                   lambda: _decode_other_square(data))
  return tf.ensure_shape(_square_resize(square, size, resize), [size, size, 3])
