"""The device half of 4.1: crops, mirrors, mean and colour noise from uint8 images, checked
against the same operations done on the host, and keyed per row and step."""
import jax
import ml_collections
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from alexnet_jax import preprocess
from alexnet_jax.configs import paper

R, S = 40, 32  # resize and crop: 9 offsets per axis.


def numpy_apply(images_BRRC, draws, consts, crop):
  """preprocess.augment's operations in NumPy on the host, one image at a time."""
  out = []
  for i, image in enumerate(np.asarray(images_BRRC)):
    x = image.astype(np.float32) - np.asarray(consts["mean"])
    y0, x0 = np.asarray(draws["offset"][i])
    x = x[y0:y0 + crop, x0:x0 + crop]
    if bool(draws["mirror"][i]):
      x = x[:, ::-1]
    out.append(x + np.asarray(consts["pca"]) @ np.asarray(draws["alpha"][i]))
  return np.stack(out)


def data_cfg(**overrides):
  cfg = ml_collections.ConfigDict(dict(random_crop=True, flip=True, pca_noise_std=0.1,
                                      crop_op="dynamic_slice"))
  cfg.update(overrides)
  return cfg


def inputs(batch=8, seed=0):
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, (batch, R, R, 3), dtype=np.uint8)
  consts = {"mean": rng.uniform(80, 140, (R, R, 3)).astype(np.float32),
            "pca": (np.linalg.qr(rng.normal(size=(3, 3)))[0] * [60.0, 20.0, 10.0]
                    ).astype(np.float32)}
  return images, consts


def test_device_augmentation_equals_the_host_operations_for_the_same_draws():
  images, consts = inputs()
  keys = preprocess.row_keys(jax.random.key(3), len(images))
  draws = preprocess.draw(keys, resize=R, crop=S, random_crop=True, flip=True, noise_std=0.1)
  mesh = Mesh(np.array(jax.devices()[:2]), ("data",))
  sharded = jax.device_put(images, NamedSharding(mesh, P("data")))
  device = jax.jit(preprocess.augment, static_argnums=3)(sharded, draws, consts, S)
  host = numpy_apply(images, jax.device_get(draws), consts, S)
  np.testing.assert_allclose(np.asarray(device), host, rtol=0, atol=1e-4)
  # The draws are not degenerate: several offsets, both mirror states, non-zero noise.
  assert len({tuple(o) for o in np.asarray(draws["offset"])}) > 4
  assert 0 < np.asarray(draws["mirror"]).sum() < len(images)
  assert np.all(np.abs(np.asarray(draws["alpha"])) > 0)


def test_draws_cover_every_offset_both_ends_included_and_have_the_stated_laws():
  keys = preprocess.row_keys(jax.random.key(0), 4096)
  d = jax.device_get(preprocess.draw(keys, resize=R, crop=S, random_crop=True, flip=True,
                                     noise_std=0.1))
  assert set(d["offset"][:, 0].tolist()) == set(range(R - S + 1))
  assert set(d["offset"][:, 1].tolist()) == set(range(R - S + 1))
  assert abs(d["mirror"].mean() - 0.5) < 0.03
  assert abs(d["alpha"].std() - 0.1) < 0.005
  fixed = jax.device_get(preprocess.draw(keys[:16], resize=R, crop=S, random_crop=False,
                                         flip=False, noise_std=0.0))
  assert np.all(fixed["offset"] == (R - S) // 2)
  assert not fixed["mirror"].any() and not fixed["alpha"].any()


def test_a_row_is_augmented_the_same_whatever_the_batch_and_the_mesh():
  images, consts = inputs(batch=8)
  key = jax.random.key(7)
  whole = preprocess.train_images(images, key, consts, data_cfg(), S)
  mesh = Mesh(np.array(jax.devices()[:2]), ("data",))
  sharded = jax.jit(lambda x: preprocess.train_images(x, key, consts, data_cfg(), S))(
      jax.device_put(images, NamedSharding(mesh, P("data"))))
  # Equal up to float rounding (the two programs fuse the subtraction and the shift apart).
  np.testing.assert_allclose(np.asarray(whole), np.asarray(sharded), rtol=0, atol=1e-4)
  # Row 5 alone, with its own key fold_in(key, 5), gives the same image.
  draws = preprocess.draw(jax.random.fold_in(key, 5)[None], resize=R, crop=S, random_crop=True,
                          flip=True, noise_std=0.1)
  alone = preprocess.augment(images[5:6], draws, consts, S)
  np.testing.assert_allclose(np.asarray(alone[0]), np.asarray(whole[5]), atol=1e-5)
  # Another step's key changes it.
  other = preprocess.train_images(images, jax.random.fold_in(key, 1), consts, data_cfg(), S)
  assert not np.allclose(np.asarray(other), np.asarray(whole))


def test_eval_crops_are_the_corners_the_centre_and_their_mirrors():
  images, consts = inputs(batch=2)
  ten = np.asarray(jax.jit(preprocess.eval_images, static_argnums=(2, 3))(images, consts, S, True))
  centre = np.asarray(preprocess.eval_images(images, consts, S, False))
  for i, image in enumerate(images):
    x = image.astype(np.float32) - consts["mean"]
    m = (R - S) // 2
    five = [x[:S, :S], x[:S, -S:], x[-S:, :S], x[-S:, -S:], x[m:m + S, m:m + S]]
    np.testing.assert_allclose(ten[i], np.stack(five + [f[:, ::-1] for f in five]), atol=1e-4)
    np.testing.assert_allclose(centre[i], five[4], atol=1e-4)


def test_crop_offsets_and_mirror_are_independent_draws():
  d = jax.device_get(preprocess.draw(preprocess.row_keys(jax.random.key(5), 2000), resize=16,
                                     crop=12, random_crop=True, flip=True, noise_std=0.1))
  top, left, mirror = d["offset"][:, 0], d["offset"][:, 1], d["mirror"].astype(float)
  for a, b in [(top, left), (top, mirror), (left, mirror), (top, d["alpha"][:, 0])]:
    assert abs(np.corrcoef(a, b)[0, 1]) < 0.1


@pytest.mark.parametrize("convention,scale", [
    ("cuda_convnet", np.sqrt), ("fb_resnet", lambda v: v / 255.0), ("paper", lambda v: v)])
def test_pca_noise_has_the_configured_covariance(tmp_path, convention, scale):
  """On 1x1 black images with no mean, each output pixel is the example's colour shift."""
  config, eigvec = stats_config(tmp_path, pca_scale=convention, mean="none")
  config.data.resize_size = 1
  eigval = np.float32([900.0, 100.0, 4.0])  # stats_config's.
  consts = preprocess.constants(config)
  zeros = np.zeros((20000, 1, 1, 3), np.uint8)
  noise = np.asarray(preprocess.train_images(zeros, jax.random.key(1), consts, config.data, 1))
  noise = noise.reshape(-1, 3).astype(np.float64)
  expected = eigvec @ np.diag((0.1 * scale(eigval)) ** 2) @ eigvec.T
  np.testing.assert_allclose(np.cov(noise.T), expected, rtol=0.05, atol=0.05 * expected[0, 0])
  np.testing.assert_array_less(np.abs(noise.mean(0)), 5 * np.sqrt(np.diag(expected) / 20000))


def stats_config(tmp_path, **data):
  from alexnet_jax.data import stats
  rng = np.random.default_rng(1)
  eigvec = np.linalg.qr(rng.normal(size=(3, 3)))[0].astype(np.float32)
  path = str(tmp_path / "stats.npz")
  stats.save_stats(dict(mean_image=rng.uniform(0, 255, (R, R, 3)).astype(np.float32),
                        channel_mean=np.float32([120, 110, 100]),
                        eigval=np.float32([900.0, 100.0, 4.0]), eigvec=eigvec,
                        num_images=np.int64(10)), path)
  config = paper.get_config()
  config.data.update(source="folder", root=str(tmp_path), stats_file=path, resize_size=R, **data)
  return config, eigvec


def test_constants_follow_the_mean_mode_and_the_pca_scale(tmp_path):
  config, eigvec = stats_config(tmp_path)
  c = preprocess.constants(config)
  assert c["mean"].shape == (R, R, 3) and c["mean"].dtype == np.float32
  np.testing.assert_allclose(c["pca"], eigvec * np.float32([30.0, 10.0, 2.0]), rtol=1e-6)
  config.data.mean = "channel"
  np.testing.assert_array_equal(preprocess.constants(config)["mean"][5, 7], [120, 110, 100])
  config.data.pca_scale = "fb_resnet"
  np.testing.assert_allclose(preprocess.constants(config)["pca"],
                             eigvec * np.float32([900.0, 100.0, 4.0]) / 255, rtol=1e-6)
  config.data.update(mean="none", pca_noise_std=0.0)
  c = preprocess.constants(config)
  assert not c["mean"].any() and not c["pca"].any()


def test_constants_refuse_statistics_of_another_size(tmp_path):
  config, _ = stats_config(tmp_path)
  config.data.resize_size = 2 * R
  with pytest.raises(ValueError, match=r"resize_size.*alexnet_jax.data.stats"):
    preprocess.constants(config)
  config.data.mean = "median"
  with pytest.raises(ValueError, match="config.data.mean='median'"):
    preprocess.constants(config)


# ---------------------------------------------------------------------------------------------
# config.data.crop_op and config.rng_impl: the same crops cut otherwise, other keys.


def test_gathered_crops_are_the_dynamic_slice_crops_bit_for_bit():
  """crop_op="gather" (pixels and mean gathered, mirror folded into the columns) gives the
  default's floats exactly, at both ends of the offsets, mirrored or not, eagerly and jitted
  over a batch split on `data`, and the partitioner keeps that split (no all-gather)."""
  images, consts = inputs(batch=8)
  keys = preprocess.row_keys(jax.random.key(3), len(images))
  draws = preprocess.draw(keys, resize=R, crop=S, random_crop=True, flip=True, noise_std=0.1)
  draws["offset"] = draws["offset"].at[:4].set(np.array([[0, 0], [0, R - S], [R - S, 0],
                                                         [R - S, R - S]], np.int32))
  draws["mirror"] = draws["mirror"].at[:4].set(np.array([False, True, False, True]))
  want = np.asarray(preprocess.augment(images, draws, consts, S))
  np.testing.assert_array_equal(np.asarray(preprocess.augment(images, draws, consts, S, "gather")),
                                want)
  mesh = Mesh(np.array(jax.devices()[:2]), ("data",))
  sharded = jax.device_put(images, NamedSharding(mesh, P("data")))
  jitted = jax.jit(preprocess.augment, static_argnums=(3, 4))
  np.testing.assert_array_equal(np.asarray(jitted(sharded, draws, consts, S, "gather")),
                                np.asarray(jitted(sharded, draws, consts, S, "dynamic_slice")))
  hlo = jitted.lower(sharded, draws, consts, S, "gather").compile().as_text()
  assert "all-gather" not in hlo
  host = numpy_apply(images, jax.device_get(draws), consts, S)
  np.testing.assert_allclose(want, host, rtol=0, atol=1e-4)
  with pytest.raises(ValueError, match="config.data.crop_op"):
    preprocess.augment(images, draws, consts, S, "scatter")


@pytest.mark.slow
@pytest.mark.parametrize("impl", ["rbg", "unsafe_rbg"])
def test_rbg_keys_augment_a_row_the_same_whatever_the_mesh(impl):
  """config.rng_impl changes the keys' PRNG (steps.step_key): other draws than threefry's,
  fixed by the seed, and still independent of how the batch is split."""
  from alexnet_jax import steps
  config = paper.get_config()
  config.rng_impl = impl
  key = jax.random.fold_in(steps.step_key(config), steps.AUGMENT_STREAM)
  images, consts = inputs(batch=8)
  whole = preprocess.train_images(images, key, consts, data_cfg(), S)
  mesh = Mesh(np.array(jax.devices()[:2]), ("data",))
  sharded = jax.jit(lambda x: preprocess.train_images(x, key, consts, data_cfg(), S))(
      jax.device_put(images, NamedSharding(mesh, P("data"))))
  np.testing.assert_allclose(np.asarray(whole), np.asarray(sharded), rtol=0, atol=1e-4)
  config.rng_impl = ""
  threefry = jax.random.fold_in(steps.step_key(config), steps.AUGMENT_STREAM)
  assert jax.random.key_impl(key) != jax.random.key_impl(threefry)
  default = preprocess.train_images(images, threefry, consts, data_cfg(), S)
  assert not np.allclose(np.asarray(default), np.asarray(whole))
