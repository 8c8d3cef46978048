r"""ImageNet (ILSVRC-2012) read in the layouts it ships in, without TFDS (source "imagenet"):

  tars       <root>/ILSVRC2012_img_train.tar       a tar of 1,000 <wnid>.tar, one a class
             <root>/ILSVRC2012_img_val.tar         ILSVRC2012_val_00000001.JPEG ..., flat
             <root>/ILSVRC2012_devkit_t12.tar.gz   data/meta.mat and
                                                   data/ILSVRC2012_validation_ground_truth.txt
  kaggle     <root>/ILSVRC/Data/CLS-LOC/train/<wnid>/*.JPEG and .../val/*.JPEG (flat),
             <root>/LOC_synset_mapping.txt (wnid names, a class a line) and
             <root>/LOC_val_solution.csv (ImageId,PredictionString: the wnid first)
  extracted  <root>/train/<wnid>/*.JPEG, <root>/val/*.JPEG (flat), and the validation labels in
             <root>: the devkit (ILSVRC2012_devkit_t12/ or its .tar.gz, or meta.mat beside
             ILSVRC2012_validation_ground_truth.txt), LOC_val_solution.csv, or val_labels.txt
             ("<file> <wnid>" a line)

The tars are extracted once into config.data.extract_dir (default: root itself) as train/<wnid>/
and val/, which is then the extracted layout; the devkit is read inside its .tar.gz.

A class's label is its wnid's position in sorted order: TFDS (imagenet2012_labels.txt),
torchvision (ImageFolder sorts the class folders) and Caffe (data/ilsvrc12/synsets.txt) number
the 1,000 classes alike, and an image-folder copy (`python -m alexnet_jax.data.prepare`) gives
the same labels again. The devkit's ILSVRC2012_IDs are another order (by WordNet hierarchy):
its ground truth is mapped id -> wnid -> sorted position, never used as a label directly; that
confusion is the validation run at 0.1% top-1. Class names are the wnids, so a prepared copy's
class folders are the wnids. Anything missing or inconsistent (a labels file, a class's folder,
a validation image's label) stops with one line naming it: reading on would score wrong labels.
"""
import csv
import io
import os
import shutil
import tarfile

import numpy as np

SPLITS = ("train", "val")
TRAIN_TAR, VAL_TAR = "ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar"
DEVKIT, DEVKIT_TAR = "ILSVRC2012_devkit_t12", "ILSVRC2012_devkit_t12.tar.gz"
META, GROUND_TRUTH = "meta.mat", "ILSVRC2012_validation_ground_truth.txt"
KAGGLE_IMAGES = os.path.join("ILSVRC", "Data", "CLS-LOC")
KAGGLE_MAPPING, KAGGLE_VAL = "LOC_synset_mapping.txt", "LOC_val_solution.csv"
VAL_LABELS = "val_labels.txt"
JPEG = (".jpeg", ".jpg")


def read_split(root, split, make_split, extract_dir=""):
  """`make_split(name, count, wnids, paths, labels)` of `split` ("train" or "val") of the
  ImageNet copy at `root`, in whichever of the three layouts it is."""
  root = os.path.expanduser(root)
  if split not in SPLITS:
    raise ValueError(f"ImageNet (config.data.source='imagenet') has the labelled splits "
                     f"{SPLITS}, not {split!r} (config.data.train_split / eval_split).")
  layout, images = locate(root, os.path.expanduser(extract_dir) if extract_dir else root)
  wnids = class_wnids(layout, root, images)
  index = {w: k for k, w in enumerate(wnids)}
  if split == "train":
    pairs = train_files(os.path.join(images, "train"), wnids)
  else:
    pairs = val_files(layout, root, images, index)
  paths = np.array([p for p, _ in pairs])
  labels = np.array([index[w] for _, w in pairs], np.int32)
  return make_split(split, len(paths), wnids, paths, labels)


def locate(root, extract_dir):
  """(layout, the folder holding train/ and val/); extracts the tars first where they are."""
  if not os.path.isdir(root):
    raise FileNotFoundError(f"No folder {root} (config.data.root): it must hold ImageNet as "
                            "tars, the Kaggle download or extracted train/ and val/.")
  if os.path.isdir(os.path.join(root, KAGGLE_IMAGES)):
    return "kaggle", os.path.join(root, KAGGLE_IMAGES)
  if any(os.path.isfile(os.path.join(root, t)) for t in (TRAIN_TAR, VAL_TAR)):
    extract_tars(root, extract_dir)
    return "extracted", extract_dir
  for folder in (extract_dir, root):  # The tars' extracted copy, kept once they are deleted.
    if os.path.isdir(os.path.join(folder, "train")) or os.path.isdir(os.path.join(folder, "val")):
      return "extracted", folder
  raise FileNotFoundError(
      f"{root} holds no ImageNet layout: {TRAIN_TAR} and {VAL_TAR} (with {DEVKIT_TAR}), the "
      f"Kaggle download's {KAGGLE_IMAGES}/, or extracted train/<wnid>/ and val/ folders.")


def extract_tars(root, out):
  """Each tar into out/train/<wnid>/ and out/val/, once: a folder already there is kept. Files
  go to <folder>.partial first, renamed when complete, so an interrupted run starts it again."""
  for tar_name, folder, nested in ((TRAIN_TAR, "train", True), (VAL_TAR, "val", False)):
    tar_path, final = os.path.join(root, tar_name), os.path.join(out, folder)
    if os.path.isdir(final) or not os.path.isfile(tar_path):
      continue
    partial = final + ".partial"
    shutil.rmtree(partial, ignore_errors=True)  # What an interrupted extraction left.
    print(f"Extracting {tar_path} into {final} (once)...", flush=True)
    try:
      with tarfile.open(tar_path, "r|") as tar:
        for member in tar:
          if not member.isfile():
            continue
          data = tar.extractfile(member)
          if nested:
            wnid = os.path.splitext(os.path.basename(member.name))[0]
            with tarfile.open(fileobj=data, mode="r|") as synset:
              for inner in synset:
                if inner.isfile():
                  _write(os.path.join(partial, wnid, os.path.basename(inner.name)),
                         synset.extractfile(inner))
          else:
            _write(os.path.join(partial, os.path.basename(member.name)), data)
    except (tarfile.TarError, EOFError) as e:
      raise ValueError(f"{tar_path} does not read as a tar ({e}): download it again.") from e
    except PermissionError as e:
      raise PermissionError(f"Cannot write {partial} ({e.strerror}): point "
                            "--config.data.extract_dir at a writable folder with room for the "
                            "extracted images (about the size of the tars).") from e
    os.replace(partial, final)


def _write(path, data):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "wb") as f:
    while chunk := data.read(1 << 20):
      f.write(chunk)


def _devkit_file(folders, name):
  """The devkit's data/<name> as bytes, from the first folder that has it (extracted devkit,
  the file itself, or inside the .tar.gz); None when none has it."""
  for folder in folders:
    for path in (os.path.join(folder, DEVKIT, "data", name), os.path.join(folder, name)):
      if os.path.isfile(path):
        with open(path, "rb") as f:
          return path, f.read()
    tar_path = os.path.join(folder, DEVKIT_TAR)
    if os.path.isfile(tar_path):
      try:
        with tarfile.open(tar_path) as tar:
          return f"{tar_path}:{DEVKIT}/data/{name}", tar.extractfile(
              f"{DEVKIT}/data/{name}").read()
      except KeyError:
        continue
      except (tarfile.TarError, EOFError, OSError) as e:
        raise ValueError(f"{tar_path} does not read as a .tar.gz ({e}): download it again.") from e
  return None, None


def read_meta(path, data):
  """{ILSVRC2012_ID: wnid} of the leaf synsets of the devkit's meta.mat (ids 1..1000 in the
  real one; its other 860 synsets are WordNet ancestors with children)."""
  import scipy.io  # Imported here: only a devkit needs it.
  try:
    synsets = scipy.io.loadmat(io.BytesIO(data), squeeze_me=True)["synsets"]
  except (ValueError, KeyError, TypeError) as e:
    raise ValueError(f"{path} is not the devkit's meta.mat (a MATLAB struct array 'synsets'): "
                     f"{e}.") from e
  leaves = {int(s["ILSVRC2012_ID"]): str(s["WNID"]) for s in np.atleast_1d(synsets)
            if int(s["num_children"]) == 0}
  if sorted(leaves) != list(range(1, len(leaves) + 1)):
    raise ValueError(f"{path}: the leaf synsets' ILSVRC2012_IDs are not 1..{len(leaves)}; use "
                     f"the meta.mat of {DEVKIT_TAR}.")
  return leaves


def class_wnids(layout, root, images):
  """The classes' wnids, sorted: from the devkit's meta.mat or LOC_synset_mapping.txt where
  present (then each must have its training folder), else the training folders'."""
  folders = [images, root]
  path, data = _devkit_file(folders, META)
  if data is not None:
    return sorted(read_meta(path, data).values())
  for folder in folders:
    mapping = os.path.join(folder, KAGGLE_MAPPING)
    if os.path.isfile(mapping):
      with open(mapping) as f:
        wnids = [line.split()[0] for line in f if line.strip()]
      if len(set(wnids)) != len(wnids):
        raise ValueError(f"{mapping} lists a wnid twice: use the file of the Kaggle download.")
      return sorted(wnids)
  if layout == "kaggle":
    raise FileNotFoundError(f"No {os.path.join(root, KAGGLE_MAPPING)}: the Kaggle download's "
                            "class list (wnid and names, a class a line) must be beside ILSVRC/.")
  train = os.path.join(images, "train")
  if not os.path.isdir(train):
    raise FileNotFoundError(f"No folder {train} and no class list ({META} or {KAGGLE_MAPPING}) "
                            f"in {root}: the classes come from one of them.")
  return sorted(d for d in os.listdir(train) if os.path.isdir(os.path.join(train, d)))


def train_files(folder, wnids):
  """[(path, wnid)] of train/<wnid>/*.JPEG; each listed wnid needs its folder, and each folder
  must be a listed class."""
  if not os.path.isdir(folder):
    raise FileNotFoundError(f"No training folder {folder} (train/<wnid>/*.JPEG).")
  present = {d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d))}
  missing = [w for w in wnids if w not in present]
  if missing:
    raise FileNotFoundError(
        f"{folder} has {len(present)} class folders for {len(wnids)} classes: no folder for "
        f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''} (an incomplete download "
        f"or extraction; {TRAIN_TAR} holds a {missing[0]}.tar).")
  extra = sorted(present - set(wnids))
  if extra:
    raise ValueError(f"{folder} has folders that are no class of the class list: "
                     f"{', '.join(extra[:5])}: remove them or use the list that came with them.")
  pairs = []
  for wnid in wnids:
    files = sorted(f for f in os.listdir(os.path.join(folder, wnid)) if f.lower().endswith(JPEG))
    if not files:
      raise FileNotFoundError(f"{os.path.join(folder, wnid)} holds no JPEG files.")
    pairs += [(os.path.join(folder, wnid, f), wnid) for f in files]
  return pairs


def val_files(layout, root, images, index):
  """[(path, wnid)] of val/*.JPEG in sorted file order, each with its label file's wnid; every
  file needs a label and every label its file."""
  folder = os.path.join(images, "val")
  if not os.path.isdir(folder):
    raise FileNotFoundError(f"No validation folder {folder} (val/*.JPEG, flat).")
  files = sorted(f for f in os.listdir(folder) if f.lower().endswith(JPEG))
  if not files and any(os.path.isdir(os.path.join(folder, d)) for d in os.listdir(folder)):
    raise ValueError(f"{folder} holds class folders, not the flat validation images: read it "
                     f"with --config.data.source=folder --config.data.root={images}.")
  source, labels = _val_labels(layout, root, images, index)
  unlabelled = [f for f in files if f not in labels]
  if unlabelled:
    raise ValueError(f"{len(unlabelled)} validation image(s) have no label in {source}, e.g. "
                     f"{os.path.join(folder, unlabelled[0])}: use the labels of these images.")
  absent = sorted(set(labels) - set(files))
  if absent:
    raise FileNotFoundError(f"{source} labels {len(absent)} image(s) missing from {folder}, "
                            f"e.g. {absent[0]}: an incomplete download or extraction.")
  if not files:
    raise FileNotFoundError(f"{folder} holds no JPEG files.")
  return [(os.path.join(folder, f), labels[f]) for f in files]


def _val_labels(layout, root, images, index):
  """(the file read, {file name: wnid}) from the first labels file found."""
  folders = [images, root]
  path, data = _devkit_file(folders, GROUND_TRUTH)
  if data is not None:
    meta_path, meta = _devkit_file(folders, META)
    if meta is None:
      raise FileNotFoundError(f"{path} gives ILSVRC2012_IDs, which only the devkit's {META} "
                              f"turns into wnids: put {DEVKIT_TAR} (or its data/{META}) in "
                              f"{root}.")
    return path, _ground_truth(path, data, read_meta(meta_path, meta))
  for folder in folders:
    for name, read in ((KAGGLE_VAL, _kaggle_solution), (VAL_LABELS, _pairs)):
      path = os.path.join(folder, name)
      if os.path.isfile(path):
        with open(path) as f:
          return path, read(path, f, index)
  raise FileNotFoundError(
      f"No validation labels in {root}: looked for {KAGGLE_VAL}" +
      ("" if layout == "kaggle" else
       f", {DEVKIT_TAR} (or {DEVKIT}/data/{GROUND_TRUTH} with {META}), {VAL_LABELS}") +
      "; a flat val/ cannot be labelled without one.")


def _ground_truth(path, data, id_to_wnid):
  labels = {}
  for number, line in enumerate(data.decode().splitlines(), 1):
    if not line.strip():
      continue
    ilsvrc_id = int(line) if line.strip().isdigit() else None
    if ilsvrc_id not in id_to_wnid:
      raise ValueError(f"{path}, line {number}: {line.strip()!r} is no ILSVRC2012_ID of the "
                       f"devkit's {META} (1..{len(id_to_wnid)}).")
    labels[f"ILSVRC2012_val_{number:08d}.JPEG"] = id_to_wnid[ilsvrc_id]
  return labels


def _kaggle_solution(path, f, index):
  rows = csv.reader(f)
  header = next(rows, None)
  if header != ["ImageId", "PredictionString"]:
    raise ValueError(f"{path} starts with {header}, not ImageId,PredictionString: use the "
                     "Kaggle download's file.")
  labels = {}
  for number, row in enumerate(rows, 2):
    wnid = row[1].split()[0] if len(row) == 2 and row[1].split() else None
    if wnid not in index:
      raise ValueError(f"{path}, line {number}: {','.join(row)!r} names no class of the class "
                       "list (expected <ImageId>,<wnid> <box> ...).")
    labels[row[0] + ".JPEG"] = wnid
  return labels


def _pairs(path, f, index):
  labels = {}
  for number, line in enumerate(f, 1):
    fields = line.split()
    if not fields:
      continue
    if len(fields) != 2 or fields[1] not in index:
      raise ValueError(f"{path}, line {number}: {line.strip()!r} is not '<file> <wnid>' with a "
                       "wnid of the classes (numbers are refused: their class order is unknown).")
    labels[os.path.basename(fields[0])] = fields[1]
  return labels
