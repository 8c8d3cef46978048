"""The image operations of paper section 4.1, as TensorFlow functions for tf.data.

Every op is a pure function of its inputs; random ops take an explicit stateless seed, a
[2] int tensor, so a batch is a function of (config.seed, epoch, position) and nothing else.
Images are float32 on the 0-255 scale, like the paper's "raw RGB values of the pixels" (2).
"""
import tensorflow as tf

# PCA colour noise scales (4.1, "altering the intensities of RGB channels"). The paper adds
# [p1 p2 p3][a1 l1, a2 l2, a3 l3]^T with a_i ~ N(0, 0.1) and l_i the eigenvalues of the RGB
# covariance. Taken literally on 0-255 pixels, l_1 ~ 1.5e4 and the noise would swamp the image
# (std ~1,500 grey levels), so the authors' own code cannot have meant variances here:
# cuda-convnet multiplies by the square roots of the eigenvalues (standard deviations ~[19.7,
# 37.1, 121.8] on 0-255), which keeps the noise in pixel units, at 10% of the colour spread
# along each principal axis. That is our default, "cuda_convnet". "fb_resnet" is the
# fb.resnet.torch convention: eigenvalues on the 0-1 scale, times 255 to come back to 0-255
# (std ~5.5 grey levels along p1: about half the cuda-convnet scale). "paper" is the formula
# as printed, for completeness.
PCA_SCALES = ("cuda_convnet", "fb_resnet", "paper")


def pca_scale(eigval, convention):
  """The per-axis multipliers of a_i, given eigenvalues of the 0-255 RGB covariance."""
  eigval = tf.convert_to_tensor(eigval, tf.float32)
  if convention == "cuda_convnet":
    return tf.sqrt(tf.maximum(eigval, 0.0))
  if convention == "fb_resnet":
    return eigval / 255.0
  if convention == "paper":
    return eigval
  raise ValueError(f"config.data.pca_scale={convention!r}: choose one of {PCA_SCALES}.")


def _square_resize(image_HWC, size):
  """Resizes a square uint8 crop to size x size, float32.

  Bilinear; antialiased (a wider, PIL-like filter) only where it shrinks by 2x or more. JPEGs
  reach here already DCT-scaled to less than 2x the target, where plain bilinear still weighs
  every source pixel, and it costs a sixth of the antialiased kernel (0.5 vs 3.3 ms at ImageNet
  sizes): the single largest cost after decoding.
  """
  side = tf.shape(image_HWC)[0]
  return tf.case([
      (tf.equal(side, size), lambda: tf.cast(image_HWC, tf.float32)),
      (side < 2 * size, lambda: tf.image.resize(image_HWC, [size, size], method="bilinear")),
  ], default=lambda: tf.image.resize(image_HWC, [size, size], method="bilinear", antialias=True))


def _decode_jpeg_square(data, size):
  """Decodes only the centre square of a JPEG, at 1/2, 1/4 or 1/8 scale where that still
  leaves at least `size` pixels (libjpeg's DCT scaling: decoding is most of the cost)."""
  shape = tf.io.extract_jpeg_shape(data)
  side = tf.minimum(shape[0], shape[1])
  # Branch b decodes at ratio 2**b; choose the largest b with side / 2**b >= size.
  branch = tf.reduce_sum(tf.cast(side // tf.constant([2, 4, 8]) >= size, tf.int32))

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


def decode_and_centre_crop(data, size=256):
  """Encoded image bytes -> float32 [size, size, 3]: the shorter side rescaled to `size`, then
  the central size x size patch (4.1's fixed resolution). Greyscale comes out as 3 channels."""
  square = tf.cond(tf.io.is_jpeg(data),
                   lambda: _decode_jpeg_square(data, size),
                   lambda: _decode_other_square(data))
  return tf.ensure_shape(_square_resize(square, size), [size, size, 3])


def subtract_mean(image_HWC, mean):
  """mean: [H, W, 3] mean image (4.1, "subtracting the mean activity over the training set from
  each pixel"), [3] per-channel mean, or None."""
  if mean is None:
    return image_HWC
  mean = tf.cast(mean, tf.float32)
  if mean.shape.rank == 1:
    return add_per_channel(image_HWC, -mean)
  return image_HWC - mean


def add_per_channel(image_HWC, value_C):
  """image + value, broadcast as rows of W*C: TF's [H,W,C] + [C] broadcast costs 6x more."""
  shape = tf.shape(image_HWC)
  rows = tf.reshape(image_HWC, [shape[0], -1]) + tf.tile(value_C, [shape[1]])
  return tf.reshape(rows, shape)


def random_crop_flip(image_HWC, seed, crop_size, *, crop=True, flip=True):
  """A random crop_size patch and a horizontal reflection with probability 1/2 (4.1)."""
  image_HWC = tf.convert_to_tensor(image_HWC, tf.float32)
  size = tf.shape(image_HWC)[0]
  crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
  if crop:
    offset = tf.random.stateless_uniform([2], crop_seed, 0, size - crop_size + 1, tf.int32)
  else:
    offset = tf.fill([2], (size - crop_size) // 2)
  patch = image_HWC[offset[0]:offset[0] + crop_size, offset[1]:offset[1] + crop_size]
  if flip:
    mirror = tf.random.stateless_uniform([], flip_seed) < 0.5
    patch = tf.cond(mirror, lambda: tf.reverse(patch, [1]), lambda: patch)  # [:, ::-1]: 7x slower.
  return tf.ensure_shape(patch, [crop_size, crop_size, 3])


def pca_noise(image_HWC, seed, eigval, eigvec, std, convention):
  """Adds eigvec @ (a * scale), a ~ N(0, std), one draw per image, to every pixel (4.1).
  eigvec holds the eigenvectors as columns."""
  alpha = tf.random.stateless_normal([3], seed, stddev=std)
  shift = tf.linalg.matvec(tf.cast(eigvec, tf.float32), alpha * pca_scale(eigval, convention))
  return add_per_channel(image_HWC, shift)


def centre_crop(image_HWC, crop_size):
  image_HWC = tf.convert_to_tensor(image_HWC, tf.float32)
  size = tf.shape(image_HWC)[0]
  o = (size - crop_size) // 2
  return tf.ensure_shape(image_HWC[o:o + crop_size, o:o + crop_size], [crop_size, crop_size, 3])


def ten_crops(image_HWC, crop_size):
  """[10, c, c, 3]: top-left, top-right, bottom-left, bottom-right, centre, then the same five
  mirrored (4.1, test time)."""
  image_HWC = tf.convert_to_tensor(image_HWC, tf.float32)
  size = tf.shape(image_HWC)[0]
  far, mid = size - crop_size, (size - crop_size) // 2
  corners = [(0, 0), (0, far), (far, 0), (far, far), (mid, mid)]
  five = tf.stack([image_HWC[y:y + crop_size, x:x + crop_size] for y, x in corners])
  return tf.ensure_shape(tf.concat([five, five[:, :, ::-1]], axis=0),
                         [10, crop_size, crop_size, 3])
