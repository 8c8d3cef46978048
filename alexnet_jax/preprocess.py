"""Section 4.1 on the device, inside the jitted steps: `train_images` (random crops, mirrors,
the mean, PCA colour noise, row i of step t keyed by fold_in(key, i)), `eval_images` (centre
or ten crops) and `constants`; docs/design.md, "Preprocessing on the device"."""
import jax
import jax.numpy as jnp
import numpy as np

from alexnet_jax import errors

MEAN_MODES = ("image", "channel", "none")
# How l_i scales a_i (4.1): sqrt(l_i) as cuda-convnet (the default), l_i / 255 as
# fb.resnet.torch, or l_i as printed (docs/design.md says why the default).
PCA_SCALES = {"cuda_convnet": lambda v: np.sqrt(np.maximum(v, 0.0)),
              "fb_resnet": lambda v: v / 255.0, "paper": lambda v: v}


def pca_scale(eigval, convention):
  """The per-axis multipliers of a_i, given eigenvalues of the 0-255 RGB covariance."""
  if convention not in PCA_SCALES:
    raise errors.ConfigError(
        f"config.data.pca_scale={convention!r}: choose one of {tuple(PCA_SCALES)}.")
  return PCA_SCALES[convention](np.asarray(eigval, np.float32))


def constants(config):
  """{"mean": [R, R, 3] to subtract (per config.data.mean), "pca": [3, 3] eigenvectors as
  columns times pca_scale, the colour shift being pca @ a}; statistics read only if needed."""
  d, size = config.data, config.data.resize_size
  if d.mean not in MEAN_MODES:
    raise errors.ConfigError(f"config.data.mean={d.mean!r}: choose one of {MEAN_MODES}.")
  mean, pca = np.zeros((size, size, 3), np.float32), np.zeros((3, 3), np.float32)
  if d.mean == "none" and d.pca_noise_std <= 0:
    return {"mean": mean, "pca": pca}
  from alexnet_jax.data import stats as stats_lib  # TensorFlow: only when statistics are used.
  stats = stats_lib.load_stats(config)
  if d.mean == "image":
    mean = np.asarray(stats["mean_image"], np.float32)
  elif d.mean == "channel":
    mean = np.broadcast_to(np.asarray(stats["channel_mean"], np.float32), mean.shape).copy()
  if mean.shape != (size, size, 3):
    raise errors.ConfigError(
        f"The statistics at {stats_lib.stats_path(config)} hold a mean image of "
        f"shape {mean.shape}, not ({size}, {size}, 3) (config.data.resize_size): "
        "compute them again for this size (python -m alexnet_jax.data.stats).")
  if d.pca_noise_std > 0:
    pca = (np.asarray(stats["eigvec"], np.float32) *
           pca_scale(stats["eigval"], d.pca_scale)[None, :]).astype(np.float32)
  return {"mean": mean, "pca": pca}


def draw(keys_B, *, resize, crop, random_crop, flip, noise_std):
  """One key per example: crop offsets in [0, resize - crop], both ends included as
  cuda-convnet2's `rand() % (border + 1)`, a mirror bit and a ~ N(0, noise_std) [3]."""
  def one(key):
    k_crop, k_flip, k_noise = jax.random.split(key, 3)
    if random_crop:
      offset = jax.random.randint(k_crop, (2,), 0, resize - crop + 1, jnp.int32)
    else:
      offset = jnp.full((2,), (resize - crop) // 2, jnp.int32)
    mirror = jax.random.bernoulli(k_flip) if flip else jnp.zeros((), bool)
    alpha = noise_std * jax.random.normal(k_noise, (3,), jnp.float32)
    return {"offset": offset, "mirror": mirror, "alpha": alpha}

  return jax.vmap(one)(keys_B)


def row_keys(key, batch_size):
  """One key per row of the global batch: fold_in(key, row)."""
  return jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(batch_size))


CROP_OPS = ("dynamic_slice", "gather")


def augment(images_BRRC, draws, consts, crop, op="dynamic_slice"):
  """float32 [B, crop, crop, 3]: (image - mean) cropped, mirrored where drawn, plus the colour
  shift; `op` (config.data.crop_op) cuts with lax.dynamic_slice or one gather, same numbers."""
  if op not in CROP_OPS:
    raise errors.ConfigError(f"config.data.crop_op={op!r}: choose one of {CROP_OPS}.")
  if op == "gather":
    x_BSSC = _gathered_crops(images_BRRC, consts["mean"], draws, crop)
  else:
    x_BRRC = images_BRRC.astype(jnp.float32) - consts["mean"][None]

    def cut(image, offset):
      return jax.lax.dynamic_slice(image, (offset[0], offset[1], 0), (crop, crop, 3))

    x_BSSC = jax.vmap(cut)(x_BRRC, draws["offset"])
    x_BSSC = jnp.where(draws["mirror"][:, None, None, None], x_BSSC[:, :, ::-1], x_BSSC)
  shift_B3 = draws["alpha"] @ consts["pca"].T
  return x_BSSC + shift_B3[:, None, None, :]


def _gathered_crops(images_BRRC, mean_RRC, draws, crop):
  """Only the crops' pixels become float32; vmapped per image, so the batch stays on `data`."""
  steps_S = jnp.arange(crop, dtype=jnp.int32)
  mean_RRC = jnp.asarray(mean_RRC)  # NumPy constants index only with NumPy indices.

  def one(image_RRC, offset, mirror):
    rows_S1 = (offset[0] + steps_S)[:, None]
    columns_1S = (offset[1] + jnp.where(mirror, crop - 1 - steps_S, steps_S))[None, :]
    return image_RRC[rows_S1, columns_1S].astype(jnp.float32) - mean_RRC[rows_S1, columns_1S]

  return jax.vmap(one)(images_BRRC, draws["offset"], draws["mirror"])


def train_images(images_BRRC, key, consts, data_cfg, crop):
  """The training batch of 4.1 from uint8 images, keyed per row by fold_in(key, row)."""
  resize = images_BRRC.shape[1]
  draws = draw(row_keys(key, images_BRRC.shape[0]), resize=resize, crop=crop,
               random_crop=data_cfg.random_crop, flip=data_cfg.flip,
               noise_std=float(data_cfg.pca_noise_std))
  return augment(images_BRRC, draws, consts, crop, data_cfg.crop_op)


def eval_images(images_BRRC, consts, crop, ten_crop):
  """The centre crop [B, S, S, 3] or 4.1's ten [B, 10, S, S, 3] (corners, centre, mirrored)."""
  size = images_BRRC.shape[1]
  far, mid = size - crop, (size - crop) // 2

  def cut(y, x):  # Cropped before the subtraction: float32 copies of the crops only.
    return (images_BRRC[:, y:y + crop, x:x + crop].astype(jnp.float32)
            - consts["mean"][None, y:y + crop, x:x + crop])
  if not ten_crop:
    return cut(mid, mid)
  corners = [(0, 0), (0, far), (far, 0), (far, far), (mid, mid)]
  five = jnp.stack([cut(y, x) for y, x in corners], axis=1)
  return jnp.concatenate([five, five[:, :, :, ::-1]], axis=1)

