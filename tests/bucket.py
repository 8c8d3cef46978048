"""A local folder standing in for a Cloud Storage bucket, offline.

A run reaches storage through three doors: etils.epath (the workdir's files, and orbax's
folders and metadata), TensorStore (orbax's arrays) and TensorFlow (TensorBoard's event
files). `stand_in(folder)` routes each door's `gs://<bucket>/<path>` to `<folder>/<bucket>/<path>`:
epath through `etils.epath.testing.mock_epath` (etils's own way to test such code), TensorStore
through the kvstore spec orbax builds for a gs:// path, TensorBoard through the log directory
clu hands TensorFlow. Everything above the doors (our code, orbax's gs:// branches: commit
files instead of renames, no hierarchical namespace) runs as it would against a bucket.
"""
import contextlib
import os
from unittest import mock

from etils.epath import gpath
from etils.epath import testing as epath_testing

SCHEME = "gs://"


def _local(folder, path):
  text = os.fspath(path)
  return os.path.join(folder, text[len(SCHEME):]) if text.startswith(SCHEME) else text


def _url(folder, path):
  text = os.fspath(path)
  prefix = os.path.join(folder, "")
  return SCHEME + text[len(prefix):] if text.startswith(prefix) else text


def _epath_mocks(folder):
  """mock_epath's functions: each gets the real one first, then epath's arguments."""
  def one(fn, path, *args, **kwargs):
    return fn(_local(folder, path), *args, **kwargs)

  def two(fn, path, dst, *args, **kwargs):
    return fn(_local(folder, path), _local(folder, dst), *args, **kwargs)

  def glob(fn, pattern):
    return [_url(folder, p) for p in fn(_local(folder, pattern))]

  def walk(fn, top, **kwargs):
    for root, dirs, files in fn(_local(folder, top), **kwargs):
      yield _url(folder, root), dirs, files

  names = ("exists", "isdir", "listdir", "makedirs", "mkdir", "open", "remove", "rmtree", "stat")
  return {**{n: one for n in names}, "copy": two, "rename": two, "replace": two, "glob": glob,
          "walk": walk}


def _tensorstore_kvstore(folder):
  def get_kvstore_for_gcs(ckpt_path):
    return {"driver": "file", "path": _local(folder, ckpt_path)}
  return get_kvstore_for_gcs


def _tensorboard_writer(folder):
  from clu import metric_writers
  real = metric_writers.create_default_writer

  def create_default_writer(logdir=None, **kwargs):
    return real(_local(folder, logdir) if logdir is not None else None, **kwargs)
  return create_default_writer


@contextlib.contextmanager
def stand_in(folder):
  """Within it, gs://<bucket>/<path> is <folder>/<bucket>/<path> for every door a run uses."""
  from orbax.checkpoint._src.path import gcs_utils
  folder = os.fspath(folder)
  with contextlib.ExitStack() as stack:
    # With TensorFlow installed epath uses tf.io.gfile, which mock_epath does not replace
    # (EPATH_USE_TF=false would not do: the answer is cached at epath's first URL).
    stack.enter_context(mock.patch.object(gpath, "_is_tf_installed", lambda: False))
    stack.enter_context(epath_testing.mock_epath(**_epath_mocks(folder)))
    stack.enter_context(mock.patch.object(gcs_utils, "get_kvstore_for_gcs",
                                          _tensorstore_kvstore(folder)))
    stack.enter_context(mock.patch.object(gcs_utils, "is_hierarchical_namespace_enabled",
                                          lambda path: False))
    stack.enter_context(mock.patch("clu.metric_writers.create_default_writer",
                                   _tensorboard_writer(folder)))
    yield
