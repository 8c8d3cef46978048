"""Comparing pytrees of arrays leaf by leaf, naming the leaf that differs."""
import jax
import numpy as np


def _pairs(got, want):
  assert jax.tree.structure(got) == jax.tree.structure(want), (
      jax.tree.structure(got), jax.tree.structure(want))
  paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(got)]
  return zip(paths, jax.tree.leaves(got), jax.tree.leaves(want))


def assert_trees_equal(got, want, check_sharding=False):
  """Same structure, dtypes and values (and shardings, if asked)."""
  for path, g, w in _pairs(got, want):
    if check_sharding:
      assert g.sharding.is_equivalent_to(w.sharding, g.ndim), (path, g.sharding, w.sharding)
    assert g.dtype == w.dtype, (path, g.dtype, w.dtype)
    np.testing.assert_array_equal(np.asarray(g), np.asarray(w), err_msg=path)


def assert_trees_close(got, want, *, rtol=1e-5, scale=1e-5, what=""):
  """Each leaf within rtol, or within `scale` times the largest magnitude of want's leaf (so
  that near-zero entries of a large array are held to the array's scale)."""
  for path, g, w in _pairs(got, want):
    w = np.asarray(w)
    np.testing.assert_allclose(np.asarray(g), w, rtol=rtol, atol=scale * np.abs(w).max(),
                               err_msg=f"{what} {path}")
