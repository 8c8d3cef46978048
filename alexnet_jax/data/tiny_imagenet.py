"""Tiny ImageNet read in its download's layout (wnids.txt, words.txt, train/, val/): `read_split`;
labels are the wnids' sorted positions (docs/design.md, "ImageNet's layouts")."""
import os

import numpy as np

from alexnet_jax import errors
from alexnet_jax.data import files


def read_split(root, split, make_split):
  """`make_split(name, count, class_names, paths, labels)` of `split` ("train" or "val")."""
  root = os.path.expanduser(root)
  wnids = read_wnids(root)
  index = {w: k for k, w in enumerate(wnids)}
  if split == "train":
    pairs = files.labelled_images({w: os.path.join(root, "train", w, "images") for w in wnids},
                                  (".jpeg", ".jpg"), "; wnids.txt lists its class")
  else:
    pairs = _val_files(root, index)
  return make_split(split, len(pairs), class_names(root, wnids), np.array([p for p, _ in pairs]),
                    np.array([index[w] for _, w in pairs], np.int32))


def read_wnids(root):
  path = os.path.join(root, "wnids.txt")
  if not os.path.isfile(path):
    raise errors.MissingFileError(
        f"No {path}: config.data.root must be the Tiny ImageNet folder that holds wnids.txt, "
        "words.txt, train/ and val/ (e.g. --config.data.root=~/data/tiny-imagenet-200).")
  with open(path) as f:
    wnids = [line.strip() for line in f if line.strip()]
  if len(set(wnids)) != len(wnids) or not wnids:
    raise errors.ConfigError(
        f"{path} must list each class's wnid once; it has {len(wnids)} lines for "
        f"{len(set(wnids))} wnids.")
  return sorted(wnids)


def class_names(root, wnids):
  """words.txt's names of each wnid, in label order."""
  path = os.path.join(root, "words.txt")
  if not os.path.isfile(path):
    raise errors.MissingFileError(f"No {path}: Tiny ImageNet's class names (wnid <TAB> names).")
  with open(path) as f:
    words = {wnid.strip(): text.strip() for wnid, _, text in (line.partition("\t") for line in f)}
  missing = [w for w in wnids if w not in words]
  if missing:
    raise errors.ConfigError(f"{path} has no names for {len(missing)} wnid(s) of wnids.txt, e.g. "
                             f"{missing[:3]}: use the words.txt that came with the dataset.")
  return [words[w] for w in wnids]


def _val_files(root, index):
  path = os.path.join(root, "val", "val_annotations.txt")
  if not os.path.isfile(path):
    raise errors.MissingFileError(f"No {path}: the validation labels (file <TAB> wnid <TAB> box) "
                                  "come from it.")
  with open(path) as f:
    labels = files.labels_in(path, f, lambda number, line: (line.split("\t") + [None])[:2], index,
                             "names no class of wnids.txt (expected file <TAB> wnid <TAB> box)")
  if not labels:
    raise errors.ConfigError(f"{path} lists no images.")
  images = os.path.join(root, "val", "images")
  missing = [name for name in labels if not os.path.isfile(os.path.join(images, name))]
  if missing:
    raise errors.MissingFileError(f"{path} lists {missing[0]}, but {images} has no such file "
                                  f"({len(missing)} of its images are missing).")
  return sorted((os.path.join(images, name), wnid) for name, wnid in labels.items())
