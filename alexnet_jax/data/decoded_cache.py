"""An indexed split decoded once (config.data.decoded_cache): `images`, in this process
("memory") or in a .npy file every run on the host maps ("mmap"); docs/design.md, "The host's
input"."""
import hashlib
import os

import numpy as np

from alexnet_jax import errors
from alexnet_jax import progress
from alexnet_jax.data import files
from alexnet_jax.data import generated
from alexnet_jax.data import stats

MODES = ("", "memory", "mmap")
# Loaded arrays, kept: evaluation opens its iterator again at every evaluation.
_LOADED = {}
_KEEP = 4


def mode_of(config):
  """config.data.decoded_cache, checked: a streamed (TFDS) split has no index to gather by."""
  mode = config.data.decoded_cache
  if mode not in MODES:
    raise errors.ConfigError(
        f"config.data.decoded_cache={mode!r}: use '' (off), 'memory' or 'mmap'.")
  if mode and config.data.source == "tfds":
    raise errors.ConfigError(
        f"config.data.decoded_cache={mode!r} needs an indexed split (sources "
        "folder, imagenet, tiny_imagenet, generated); TFDS splits are streamed: leave "
        "config.data.decoded_cache empty.")
  return mode


def images(config, split, decode_batches, *, active=True):
  """uint8 [N, S, S, 3] of `split`, from `decode_batches()` once; None when the cache is off."""
  mode = mode_of(config)
  if not mode:
    return None
  key = (mode, cache_key(config, split))
  if key not in _LOADED:
    shape = (split.num_examples, config.data.resize_size, config.data.resize_size, 3)
    if mode == "memory":
      array = np.empty(shape, np.uint8)
      _decode_all(array.__setitem__, decode_batches, split, active)
    else:
      array = _mapped(cache_path(config, split), shape, decode_batches, split, active)
    while len(_LOADED) >= _KEEP:
      _LOADED.pop(next(iter(_LOADED)))
    _LOADED[key] = array
  return _LOADED[key]


def cache_key(config, split):
  """stats.source_key's name plus a digest of the split's files and labels."""
  d = config.data
  files = hashlib.sha1("\n".join(map(str, split.paths)).encode())
  files.update(np.ascontiguousarray(split.labels, np.int32).tobytes())
  return (f"{stats.source_key(config)}-{split.name}-{split.num_examples}-{d.resize_size}-"
          f"{d.resize}-{files.hexdigest()[:10]}")


def cache_path(config, split):
  return os.path.join(generated.cache_dir(config), "decoded", cache_key(config, split) + ".npy")


def _decode_all(put, decode_batches, split, active):
  """put(rows, batch) for each decoded batch, `rows` its slice of the split."""
  done = 0
  with progress.Progress(split.num_examples, f"decoding split {split.name!r} once",
                         active=active) as bar:
    for batch in decode_batches():
      put(slice(done, done + len(batch)), batch)
      done += len(batch)
      bar.update(len(batch))
  if done != split.num_examples:
    raise RuntimeError(f"Decoded {done} images of split {split.name!r}, not "
                       f"{split.num_examples}.")


def _mapped(path, shape, decode_batches, split, active):
  """The file at `path`, written first if absent (or not of `shape`), memory-mapped; written
  sequentially, not through a map: a full disk would be a SIGBUS."""
  try:
    array = np.load(path, mmap_mode="r")
    if array.shape == shape and array.dtype == np.uint8:
      return array
  except (OSError, ValueError):
    pass
  fix = (f"free {np.prod(shape):,} bytes for the decoded cache, or set "
         "config.data.decoded_cache='memory' or ''.")
  with files.written(path, fix) as f:
    np.lib.format.write_array_header_1_0(
        f, {"descr": "|u1", "fortran_order": False, "shape": shape})
    _decode_all(lambda rows, batch: f.write(np.ascontiguousarray(batch, np.uint8).data),
                decode_batches, split, active)
    f.flush()
    os.fsync(f.fileno())
  return np.load(path, mmap_mode="r")
