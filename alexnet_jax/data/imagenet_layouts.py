"""ImageNet read without TFDS in the layouts it ships in, its tars, Kaggle's or extracted folders
(config.data.source="imagenet"): `read_split`; labels are the wnids' sorted positions
(docs/design.md, "ImageNet's layouts")."""
import io
import json
import os
import shutil
import tarfile

import numpy as np

from alexnet_jax import errors
from alexnet_jax import progress
from alexnet_jax.data import files

SPLITS = ("train", "val")
TRAIN_TAR, VAL_TAR = "ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar"
DEVKIT, DEVKIT_TAR = "ILSVRC2012_devkit_t12", "ILSVRC2012_devkit_t12.tar.gz"
META, GROUND_TRUTH = "meta.mat", "ILSVRC2012_validation_ground_truth.txt"
KAGGLE_IMAGES = os.path.join("ILSVRC", "Data", "CLS-LOC")
KAGGLE_MAPPING, KAGGLE_VAL = "LOC_synset_mapping.txt", "LOC_val_solution.csv"
VAL_LABELS = "val_labels.txt"
JPEG = (".jpeg", ".jpg")
RECORD = ".extracted.json"  # In an extracted folder: the tar it came from, its size and mtime.


def read_split(root, split, make_split, extract_dir=""):
  """`make_split(name, count, wnids, paths, labels)` of `split` in whichever layout it is."""
  root = os.path.expanduser(root)
  layout, images = locate(root, os.path.expanduser(extract_dir or root))
  wnids, class_list = class_wnids(layout, root, images)
  index = {w: k for k, w in enumerate(wnids)}
  pairs = (train_files(os.path.join(images, "train"), wnids, class_list) if split == "train"
           else val_files(layout, root, images, index, class_list))
  return make_split(split, len(pairs), wnids, np.array([p for p, _ in pairs]),
                    np.array([index[w] for _, w in pairs], np.int32))


def locate(root, extract_dir):
  """(layout, the folder holding train/ and val/); extracts the tars first where they are."""
  if not os.path.isdir(root):
    raise errors.MissingFileError(
        f"No folder {root} (config.data.root): it must hold ImageNet as tars, the Kaggle "
        "download or extracted train/ and val/.")
  if os.path.isdir(os.path.join(root, KAGGLE_IMAGES)):
    return "kaggle", os.path.join(root, KAGGLE_IMAGES)
  if any(os.path.isfile(os.path.join(root, t)) for t in (TRAIN_TAR, VAL_TAR)):
    _labels_file("extracted", root, extract_dir)  # Missing, it stops before hours of extraction.
    extract_tars(root, extract_dir)
    return "extracted", extract_dir
  for folder in (extract_dir, root):  # The tars' extracted copy, kept once they are deleted.
    if any(os.path.isdir(os.path.join(folder, s)) for s in SPLITS):
      return "extracted", folder
  raise errors.MissingFileError(
      f"{root} holds no ImageNet layout: {TRAIN_TAR} and {VAL_TAR} (with {DEVKIT_TAR}), the "
      f"Kaggle download's {KAGGLE_IMAGES}/, or extracted train/<wnid>/ and val/ folders.")


def extract_tars(root, out):
  """Each tar extracted once, val first: a cut-short val tar stops before hours of train's."""
  for tar_name, folder, nested in ((VAL_TAR, "val", False), (TRAIN_TAR, "train", True)):
    tar_path, final = os.path.join(root, tar_name), os.path.join(out, folder)
    if not os.path.isfile(tar_path):
      continue
    stat = os.stat(tar_path)
    record = {"tar": tar_name, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    try:
      with open(os.path.join(final, RECORD)) as f:
        found = json.load(f)
    except (OSError, ValueError):
      found = None
    if found == record:
      continue
    if found is None and os.path.isdir(final):
      raise errors.ConfigError(
          f"{final} holds no record ({RECORD}) that {tar_path} was extracted into it whole (an "
          f"extraction cut short, or a copy made otherwise): delete {final} to extract the tar "
          f"again, or move the tar away to read {final} as it is.")
    partial = final + ".partial"
    shutil.rmtree(partial, ignore_errors=True)  # What an interrupted extraction left.
    print(f"Extracting {tar_path} into {final}" +
          (" again: the tar changed since it was extracted." if found else " (once)..."),
          flush=True)
    try:
      _extract(tar_path, partial, nested)
    except (tarfile.TarError, EOFError) as e:
      raise errors.ConfigError(f"{tar_path} does not read as a tar ({e}): download it "
                               "again.") from e
    os.makedirs(partial, exist_ok=True)
    with open(os.path.join(partial, RECORD), "w") as f:  # Renamed with the folder.
      json.dump(record, f)
    shutil.rmtree(final, ignore_errors=True)  # The copy of the tar this one replaced.
    os.replace(partial, final)


def _extract(tar_path, out, nested):
  """Every file of the tar (of each class tar in it, when `nested`) into out, flat."""
  with tarfile.open(tar_path, "r:") as tar, progress.Progress(
      os.path.getsize(tar_path) >> 20, f"extracting {os.path.basename(tar_path)}",
      unit="MB") as bar:
    for member, data in _whole_members(tar, tar_path):
      if nested:
        wnid = os.path.splitext(os.path.basename(member.name))[0]
        with tarfile.open(fileobj=data, mode="r:") as synset:
          for inner, inner_data in _whole_members(synset, f"{member.name} inside {tar_path}"):
            _write(os.path.join(out, wnid, os.path.basename(inner.name)), inner_data)
      else:
        _write(os.path.join(out, os.path.basename(member.name)), data)
      bar.update_to(tar.offset >> 20)


def _whole_members(tar, name):
  """(member, data) of each file of `tar`, which must end with its end-of-archive block."""
  for member in tar:
    if member.isfile():
      yield member, tar.extractfile(member)
  tar.fileobj.seek(tar.offset)
  if tar.fileobj.read(tarfile.BLOCKSIZE) != bytes(tarfile.BLOCKSIZE):
    raise errors.ConfigError(
        f"{name} ends after {tar.offset:,} bytes without its end-of-archive block: it was cut "
        "short (an interrupted download or copy); download it again.")


def _write(path, data):
  fix = ("point --config.data.extract_dir at a writable folder with room for the extracted "
         "images (about the size of the tars).")
  with files.written(path, fix) as f:
    shutil.copyfileobj(data, f, 1 << 20)


def _devkit_file(folders, name):
  """(where, bytes, the .tar.gz or None) of the devkit's data/<name>; Nones when absent."""
  for folder in folders:
    for path in (os.path.join(folder, DEVKIT, "data", name), os.path.join(folder, name)):
      if os.path.isfile(path):
        with open(path, "rb") as f:
          return path, f.read(), None
    tar_path = os.path.join(folder, DEVKIT_TAR)
    if os.path.isfile(tar_path):
      member = f"{DEVKIT}/data/{name}"
      try:
        with tarfile.open(tar_path) as tar:
          return f"{member} inside {tar_path}", tar.extractfile(member).read(), tar_path
      except KeyError:
        continue
      except (tarfile.TarError, EOFError, OSError) as e:
        raise errors.ConfigError(f"{tar_path} does not read as a .tar.gz ({e}): download it "
                                 "again.") from e
  return None, None, None


def read_meta(path, data):
  """{ILSVRC2012_ID: wnid} of the leaf synsets of the devkit's meta.mat."""
  import scipy.io  # Imported here: only a devkit needs it.
  try:
    synsets = scipy.io.loadmat(io.BytesIO(data), squeeze_me=True)["synsets"]
  except (ValueError, KeyError, TypeError) as e:
    raise errors.ConfigError(f"{path} is not the devkit's meta.mat (a MATLAB struct array "
                             f"'synsets'): {e}.") from e
  leaves = {int(s["ILSVRC2012_ID"]): str(s["WNID"]) for s in np.atleast_1d(synsets)
            if int(s["num_children"]) == 0}
  if sorted(leaves) != list(range(1, len(leaves) + 1)):
    raise errors.ConfigError(f"{path}: the leaf synsets' ILSVRC2012_IDs are not "
                             f"1..{len(leaves)}; use the meta.mat of {DEVKIT_TAR}.")
  return leaves


def class_wnids(layout, root, images):
  """(sorted wnids, their list's file, None for the training folders')."""
  folders = [images, root]
  path, data, _ = _devkit_file(folders, META)
  if data is not None:
    return sorted(read_meta(path, data).values()), path
  for folder in folders:
    mapping = os.path.join(folder, KAGGLE_MAPPING)
    if os.path.isfile(mapping):
      with open(mapping) as f:
        wnids = [line.split()[0] for line in f if line.strip()]
      if len(set(wnids)) != len(wnids):
        raise errors.ConfigError(f"{mapping} lists a wnid twice: use the file of the Kaggle "
                                 "download.")
      return sorted(wnids), mapping
  if layout == "kaggle":
    raise errors.MissingFileError(
        f"No {os.path.join(root, KAGGLE_MAPPING)}: the Kaggle download's class list (wnid and "
        "names, a class a line) must be beside ILSVRC/.")
  train = os.path.join(images, "train")
  if not os.path.isdir(train):
    raise errors.MissingFileError(f"No folder {train} and no class list ({META} or "
                                  f"{KAGGLE_MAPPING}) in {root}: the classes come from one of "
                                  "them.")
  return sorted(d for d in os.listdir(train) if os.path.isdir(os.path.join(train, d))), None


def train_files(folder, wnids, class_list):
  """[(path, wnid)] of train/<wnid>/*.JPEG: a folder for each listed wnid, and no other."""
  if not os.path.isdir(folder):
    raise errors.MissingFileError(f"No training folder {folder} (train/<wnid>/*.JPEG).")
  present = {d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d))}
  missing = [w for w in wnids if w not in present]
  if missing:
    raise errors.MissingFileError(
        f"{folder} has {len(present)} class folders for {len(wnids)} classes (those of "
        f"{class_list}): no folder for {', '.join(missing[:5])}"
        f"{' ...' if len(missing) > 5 else ''} (an incomplete download or extraction; "
        f"{TRAIN_TAR} holds a {missing[0]}.tar).")
  extra = sorted(present - set(wnids))
  if extra:
    raise errors.ConfigError(
        f"{folder} has folders that are no class of the class list {class_list}: "
        f"{', '.join(extra[:5])}: remove them or use the list that came with them.")
  return files.labelled_images({w: os.path.join(folder, w) for w in wnids}, JPEG, "")


def val_files(layout, root, images, index, class_list):
  """[(path, wnid)] of val/*.JPEG, sorted; a file without a label, or the reverse, stops."""
  folder = os.path.join(images, "val")
  if not os.path.isdir(folder):
    raise errors.MissingFileError(f"No validation folder {folder} (val/*.JPEG, flat).")
  names = files.images_in(folder, JPEG)
  if not names and any(os.path.isdir(os.path.join(folder, d)) for d in os.listdir(folder)):
    raise errors.ConfigError(
        f"{folder} holds class folders, not the flat validation images: read it with "
        f"--config.data.source=folder --config.data.root={images}.")
  train = os.path.join(images, "train")
  source, parse = _labels_file(layout, root, images)
  labels = parse(source, index, class_list or f"the class folders of {train}")
  unlabelled = [f for f in names if f not in labels]
  if unlabelled:
    raise errors.ConfigError(
        f"{len(unlabelled)} validation image(s) have no label in {source}, e.g. "
        f"{os.path.join(folder, unlabelled[0])}: use the labels of these images.")
  absent = sorted(set(labels) - set(names))
  if absent:
    raise errors.MissingFileError(f"{source} labels {len(absent)} image(s) missing from "
                                  f"{folder}, e.g. {absent[0]}: an incomplete download or "
                                  "extraction.")
  if not names:
    raise errors.MissingFileError(f"{folder} holds no JPEG files.")
  unnamed = sorted(set(index) - set(labels.values())) if class_list is None else []
  if unnamed:
    raise errors.ConfigError(
        f"{train} has {len(unnamed)} class folder(s) that {source} gives no image: "
        f"{', '.join(unnamed[:5])}: remove them or use the labels that came with them.")
  return [(os.path.join(folder, f), labels[f]) for f in names]


def _labels_file(layout, root, images):
  """(labels file, f(it, class index, list name) -> {file: wnid}); checked before extraction."""
  folders = [images, root]
  path, data, tar_path = _devkit_file(folders, GROUND_TRUTH)
  if data is not None:
    meta_path, meta, _ = _devkit_file(folders, META)
    if meta is None:
      raise errors.MissingFileError(
          f"No {DEVKIT}/data/{META} inside {tar_path}: it turns the ILSVRC2012_IDs of "
          f"{GROUND_TRUTH} beside it into wnids; download {DEVKIT_TAR} again." if tar_path else
          f"No {META} beside {path}: the devkit's data/{META} turns its ILSVRC2012_IDs into "
          f"wnids; copy it there from {DEVKIT_TAR}.")
    return path, lambda path, index, named: _ground_truth(path, data, read_meta(meta_path, meta),
                                                          index)
  for folder in folders:
    for name, read in ((KAGGLE_VAL, _kaggle_solution), (VAL_LABELS, _pairs)):
      path = os.path.join(folder, name)
      if os.path.isfile(path):
        return path, read
  raise errors.MissingFileError(
      f"No validation labels in {root}: looked for {KAGGLE_VAL}" +
      ("" if layout == "kaggle" else
       f", {DEVKIT_TAR} (or {DEVKIT}/data/{GROUND_TRUTH} with {META}), {VAL_LABELS}") +
      "; a flat val/ cannot be labelled without one.")


def _ground_truth(path, data, id_to_wnid, index):
  def label(number, line):  # The n-th line holds the n-th image's ILSVRC2012_ID.
    wnid = id_to_wnid.get(int(line)) if line.isdigit() else None
    return f"ILSVRC2012_val_{number:08d}.JPEG", wnid

  return files.labels_in(path, data.decode().splitlines(), label, index, "is no ILSVRC2012_ID "
                         f"of the devkit's {META} (1..{len(id_to_wnid)})")


def _kaggle_solution(path, index, named):
  def label(number, line):  # <ImageId>,<wnid> <box> [<wnid> <box> ...]
    image, _, boxes = line.partition(",")
    return image + ".JPEG", boxes.split()[0] if boxes.split() else None

  with open(path) as f:
    lines = f.read().splitlines()
  if lines[:1] != ["ImageId,PredictionString"]:
    raise errors.ConfigError(f"{path} starts with {lines[:1]}, not ImageId,PredictionString: use "
                             "the Kaggle download's file.")
  return files.labels_in(path, lines[1:], label, index, f"names no class of {named} (expected "
                         "<ImageId>,<wnid> <box> ...)", start=2)


def _pairs(path, index, named):
  def label(number, line):  # <file> <wnid>
    fields = line.split()
    return os.path.basename(fields[0]), fields[1] if len(fields) == 2 else None

  with open(path) as f:
    return files.labels_in(path, f, label, index, f"is not '<file> <wnid>' with a wnid of {named} "
                           "(numbers are refused: their class order is unknown)")
