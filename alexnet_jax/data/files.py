"""The files the data modules read and write: `images_in` a class folder, `labelled_images` of
folders a class each, `labels_in` a labels file, and `written`, a file whole or not at all."""
import contextlib
import os

from alexnet_jax import errors

TMP = ".tmp"  # In a file's name while it is written; a kill leaves it, `written` does not.


def images_in(folder, extensions):
  """The names of the files in `folder` that end with one of `extensions`, sorted."""
  return sorted(f for f in os.listdir(folder) if f.lower().endswith(extensions))


def labelled_images(folders, extensions, fix):
  """[(path, key)] of the images in each `folders` {key: folder}; one with none stops (`fix`)."""
  pairs = []
  for key, folder in folders.items():
    names = images_in(folder, extensions) if os.path.isdir(folder) else []
    if not names:
      raise errors.MissingFileError(f"{folder} holds no images ({', '.join(extensions)}){fix}.")
    pairs += [(os.path.join(folder, n), key) for n in names]
  return pairs


def labels_in(path, lines, label, index, expected, start=1):
  """{file: wnid} of the `lines` of `path` that are not blank, each `label(number, line)`; a line
  whose wnid is not in `index` stops, saying what was `expected`."""
  labels = {}
  for number, line in enumerate(lines, start):
    if line.strip():
      file, wnid = label(number, line.strip())
      if wnid not in index:
        raise errors.ConfigError(f"{path}, line {number}: {line.strip()!r} {expected}.")
      labels[file] = wnid
  return labels


@contextlib.contextmanager
def written(path, fix=None):
  """A binary file that appears at `path` once whole, so a kill leaves none cut short; an OSError
  says `fix` (None: raised as it is)."""
  tmp = f"{path}{TMP}{os.getpid()}"
  try:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(tmp, "wb") as f:
      yield f
    os.replace(tmp, path)
  except OSError as e:
    if fix is None:
      raise
    raise errors.WriteRefusedError(f"Cannot write {path} ({e.strerror or e}): {fix}") from e
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
