"""Small copies of ImageNet in the three layouts it ships in (the ILSVRC2012 tars with the
devkit, the Kaggle download, extracted folders with a flat val/ and a labels file), made of the
shared sample photos (a photo a class; generated JPEGs where they are absent).

The devkit's ILSVRC2012_IDs are deliberately not in sorted-wnid order, as in the real meta.mat,
so that a reader that takes an id for a label fails; meta.mat also holds an ancestor synset
(with children), which is no class."""
import io
import pathlib
import tarfile

import numpy as np

from tests import imagenet_archive

SAMPLES = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "imagenet_samples"
TRAIN_PER_CLASS = 2
# Sorted-wnid positions of the validation images ILSVRC2012_val_00000001.JPEG, ... .
VAL_CLASSES = [2, 0, 3, 1, 3, 1, 0, 2]
# The ILSVRC2012_ID of each class in sorted-wnid order: a permutation moving every class, as
# in the devkit (an even class count, so the two towers can train on a copy).
IDS = [3, 1, 4, 2]


def class_photos(n=len(IDS)):
  """[(wnid, JPEG bytes)] of `n` classes in sorted-wnid order, each photo distinct."""
  photos = sorted(SAMPLES.glob("n*_*.JPEG"))
  if len(photos) >= n:
    step = len(photos) // n  # Classes spread over the list, not n neighbours.
    return [(p.name.split("_")[0], p.read_bytes()) for p in photos[::step][:n]]
  import tensorflow as tf
  out = []
  for k in range(n):
    image = np.full((48, 64, 3), 40 * k + 20, np.uint8)
    image[:8, :8] = 255 - 40 * k
    out.append((f"n0{k + 1:07d}", tf.io.encode_jpeg(image, quality=95).numpy()))
  return out


def val_name(k):
  return f"ILSVRC2012_val_{k + 1:08d}.JPEG"


def meta_mat(classes, ids=IDS):
  """The devkit's meta.mat: a struct array `synsets` with its fields; leaves have the ids
  `ids`, then one ancestor synset with children."""
  import scipy.io
  fields = ["ILSVRC2012_ID", "WNID", "words", "gloss", "num_children", "children",
            "wordnet_height", "num_train_images"]
  rows = [(i, wnid, f"class {wnid}", 0) for i, (wnid, _) in zip(ids, classes)]
  rows.append((len(ids) + 1, "n99999999", "an ancestor", len(ids)))
  synsets = np.zeros((len(rows), 1), [(f, "O") for f in fields])
  for k, (i, wnid, words, children) in enumerate(sorted(rows)):
    synsets[k, 0] = (np.array([[i]], np.uint16), np.array([wnid]), np.array([words]),
                     np.array(["a gloss"]), np.array([[children]], np.uint16),
                     np.arange(1, children + 1, dtype=np.uint16)[None] if children else
                     np.zeros((0, 0)), np.array([[0]], np.uint16),
                     np.array([[TRAIN_PER_CLASS]], np.uint16))
  out = io.BytesIO()
  scipy.io.savemat(out, {"synsets": synsets})
  return out.getvalue()


def ground_truth(val_classes=VAL_CLASSES, ids=IDS):
  return "".join(f"{ids[c]}\n" for c in val_classes).encode()


def devkit_files(classes):
  return {"data/meta.mat": meta_mat(classes), "data/ILSVRC2012_validation_ground_truth.txt":
          ground_truth()}


def write_devkit_tar(folder, classes):
  with tarfile.open(folder / "ILSVRC2012_devkit_t12.tar.gz", "w:gz") as tar:
    for name, data in devkit_files(classes).items():
      imagenet_archive.member(tar, f"ILSVRC2012_devkit_t12/{name}", data)


def write_tars(root, classes):
  """ILSVRC2012_img_train.tar (a tar per class), ILSVRC2012_img_val.tar (flat) and the devkit."""
  root = pathlib.Path(root)
  root.mkdir(parents=True, exist_ok=True)
  with tarfile.open(root / "ILSVRC2012_img_train.tar", "w") as train:
    for wnid, data in classes:
      inner = io.BytesIO()
      with tarfile.open(fileobj=inner, mode="w") as synset:
        for k in range(TRAIN_PER_CLASS):
          imagenet_archive.member(synset, f"{wnid}_{k}.JPEG", data)
      imagenet_archive.member(train, f"{wnid}.tar", inner.getvalue())
  with tarfile.open(root / "ILSVRC2012_img_val.tar", "w") as val:
    for k, c in enumerate(VAL_CLASSES):
      imagenet_archive.member(val, val_name(k), classes[c][1])
  write_devkit_tar(root, classes)
  return root


def write_images(images, classes):
  """images/train/<wnid>/<wnid>_<k>.JPEG and images/val/ILSVRC2012_val_*.JPEG (flat)."""
  for wnid, data in classes:
    (images / "train" / wnid).mkdir(parents=True)
    for k in range(TRAIN_PER_CLASS):
      (images / "train" / wnid / f"{wnid}_{k}.JPEG").write_bytes(data)
  (images / "val").mkdir(parents=True)
  for k, c in enumerate(VAL_CLASSES):
    (images / "val" / val_name(k)).write_bytes(classes[c][1])


def kaggle_mapping(wnids):
  return "".join(f"{w} class {w}, another name\n" for w in sorted(wnids))


def kaggle_solution(classes):
  """LOC_val_solution.csv, rows in an order of their own, each with one or two boxes."""
  rows = []
  for k in reversed(range(len(VAL_CLASSES))):
    wnid = classes[VAL_CLASSES[k]][0]
    boxes = f"{wnid} 10 20 30 40" + (f" {wnid} 1 2 3 4" if k % 2 else "")
    rows.append(f"{val_name(k)[:-5]},{boxes} \n")
  return "ImageId,PredictionString\n" + "".join(rows)


def write_kaggle(root, classes):
  """The Kaggle download: ILSVRC/Data/CLS-LOC/{train,val}, LOC_synset_mapping.txt and
  LOC_val_solution.csv."""
  root = pathlib.Path(root)
  write_images(root / "ILSVRC" / "Data" / "CLS-LOC", classes)
  (root / "LOC_synset_mapping.txt").write_text(kaggle_mapping([w for w, _ in classes]))
  (root / "LOC_val_solution.csv").write_text(kaggle_solution(classes))
  return root


def write_extracted(root, classes, labels):
  """train/ and a flat val/ with the labels file `labels`: "devkit" (the extracted devkit
  folder), "devkit_tar", "kaggle" (LOC_val_solution.csv) or "pairs" (val_labels.txt)."""
  root = pathlib.Path(root)
  write_images(root, classes)
  if labels == "devkit":
    for name, data in devkit_files(classes).items():
      path = root / "ILSVRC2012_devkit_t12" / name
      path.parent.mkdir(parents=True, exist_ok=True)
      path.write_bytes(data)
  elif labels == "devkit_tar":
    write_devkit_tar(root, classes)
  elif labels == "kaggle":
    (root / "LOC_val_solution.csv").write_text(kaggle_solution(classes))
  elif labels == "pairs":
    (root / "val_labels.txt").write_text("".join(
        f"{val_name(k)} {classes[c][0]}\n" for k, c in enumerate(VAL_CLASSES)))
  return root
