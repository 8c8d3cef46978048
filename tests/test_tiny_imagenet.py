"""Tiny ImageNet read in its own layout: labels from the sorted wnids, names from words.txt,
validation labels from val_annotations.txt, greyscale files as RGB, and each broken layout
stopped with the file named. The layout is written here with a few real-format JPEGs; the
shared copy of the dataset, where present, is read whole."""
import os
import pathlib

import numpy as np
import pytest
import tensorflow as tf

from alexnet_jax.configs import tiny_imagenet as tiny_config
from alexnet_jax.data import input_pipeline
from alexnet_jax.data import sources
from tests import tiny_config as test_config

WNIDS = ["n02", "n01", "n03", "n04"]   # wnids.txt order; labels follow the sorted order.
WNIDS_SORTED = sorted(WNIDS)
WORDS = {"n01": "goldfish, Carassius auratus", "n02": "bullfrog", "n03": "tabby, tabby cat",
         "n04": "school bus", "n99": "not a class"}
SHARED = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyimagenet200.tar.gz"


def _jpeg(path, value, grey=False):
  image = np.full((64, 64, 1 if grey else 3), value, np.uint8)
  image[:8, :8] = 255 - value  # Not flat, so that a crop or flip can be seen.
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tf.io.write_file(str(path), tf.io.encode_jpeg(image, quality=95))


def make_layout(root, train_per_class=3, val_per_class=2):
  """<root>/tiny-imagenet-200 in the dataset's layout; the first validation image is greyscale."""
  root = pathlib.Path(root) / "tiny-imagenet-200"
  root.mkdir(parents=True)
  (root / "wnids.txt").write_text("".join(w + "\n" for w in WNIDS))
  (root / "words.txt").write_text("".join(f"{w}\t{t}\n" for w, t in WORDS.items()))
  for k, wnid in enumerate(WNIDS):
    for i in range(train_per_class):
      _jpeg(root / "train" / wnid / "images" / f"{wnid}_{i}.JPEG", 40 * k + i)
    (root / "train" / wnid / f"{wnid}_boxes.txt").write_text("")
  lines, j = [], 0
  for k, wnid in enumerate(WNIDS):
    for _ in range(val_per_class):
      _jpeg(root / "val" / "images" / f"val_{j}.JPEG", 40 * k + 20, grey=j == 0)
      lines.append(f"val_{j}.JPEG\t{wnid}\t0\t0\t63\t63\n")
      j += 1
  (root / "val" / "val_annotations.txt").write_text("".join(lines))
  return root


def _config(root, cache_dir):
  config = test_config.get_config()
  config.model.num_classes = len(WNIDS)
  config.data.update(source="tiny_imagenet", root=str(root), eval_split="val",
                     cache_dir=cache_dir, mean="none", pca_noise_std=0.0)
  return config


def test_training_split_labels_from_sorted_wnids_and_names_from_words(tmp_path):
  root = make_layout(tmp_path)
  split = sources.open_split(_config(root, str(tmp_path)), "train")
  assert split.num_examples == 12
  assert split.class_names == ["goldfish, Carassius auratus", "bullfrog", "tabby, tabby cat",
                               "school bus"]
  names = [os.path.basename(p) for p in split.paths]
  assert names[:3] == ["n01_0.JPEG", "n01_1.JPEG", "n01_2.JPEG"]
  assert list(split.labels) == [0] * 3 + [1] * 3 + [2] * 3 + [3] * 3
  assert all(os.path.basename(p).startswith(WNIDS_SORTED[label])
             for p, label in zip(split.paths, split.labels))


def test_validation_labels_come_from_the_annotations(tmp_path):
  root = make_layout(tmp_path)
  split = sources.open_split(_config(root, str(tmp_path)), "val")
  by_name = dict(zip((os.path.basename(p) for p in split.paths), split.labels))
  # val_0, val_1 are n02's (label 1), val_2, val_3 n01's (label 0), then n03 and n04.
  assert by_name == {"val_0.JPEG": 1, "val_1.JPEG": 1, "val_2.JPEG": 0, "val_3.JPEG": 0,
                     "val_4.JPEG": 2, "val_5.JPEG": 2, "val_6.JPEG": 3, "val_7.JPEG": 3}


def test_per_class_limits_keep_the_first_images_of_each_class(tmp_path):
  root = make_layout(tmp_path)
  config = _config(root, str(tmp_path))
  config.data.update(max_train_per_class=2, max_eval_per_class=1)
  train = sources.open_split(config, "train")
  assert [os.path.basename(p) for p in train.paths[:2]] == ["n01_0.JPEG", "n01_1.JPEG"]
  assert list(train.labels) == [0, 0, 1, 1, 2, 2, 3, 3]
  assert sorted(sources.open_split(config, "val").labels) == [0, 1, 2, 3]


def test_the_pipeline_decodes_greyscale_files_as_rgb_at_256(tmp_path):
  root = make_layout(tmp_path)
  config = _config(root, str(tmp_path))
  config.eval.batch_size = 8
  batch = next(input_pipeline.eval_iterator(config, "val", batch_size=8))
  images = batch["image"]
  assert images.shape == (8, config.data.resize_size, config.data.resize_size, 3)
  grey = images[list(batch["label"]).index(1)]  # val_0 is the first n02 image, greyscale.
  assert np.array_equal(grey[..., 0], grey[..., 1]) and np.array_equal(grey[..., 1], grey[..., 2])
  info = input_pipeline.dataset_info(config)
  assert info == dict(num_classes=4, num_train=12, num_eval=8, eval_split="val")


@pytest.mark.parametrize("damage, named", [
    ("annotations", "val_annotations.txt"),
    ("unknown_wnid", "val_annotations.txt, line 3"),
    ("missing_image", "val_5.JPEG"),
    ("wnids", "wnids.txt"),
    ("class_folder", os.path.join("train", "n03", "images")),
    ("words", "words.txt"),
])
def test_a_broken_layout_stops_with_the_file_named(tmp_path, damage, named):
  root = make_layout(tmp_path)
  if damage == "annotations":
    os.remove(root / "val" / "val_annotations.txt")
  elif damage == "unknown_wnid":
    path = root / "val" / "val_annotations.txt"
    lines = path.read_text().splitlines(keepends=True)
    lines[2] = lines[2].replace("n01", "n77")
    path.write_text("".join(lines))
  elif damage == "missing_image":
    os.remove(root / "val" / "images" / "val_5.JPEG")
  elif damage == "wnids":
    os.remove(root / "wnids.txt")
  elif damage == "class_folder":
    for f in os.listdir(root / "train" / "n03" / "images"):
      os.remove(root / "train" / "n03" / "images" / f)
    os.rmdir(root / "train" / "n03" / "images")
  elif damage == "words":
    (root / "words.txt").write_text("n01\tgoldfish\n")
  config = _config(root, str(tmp_path))
  with pytest.raises((FileNotFoundError, ValueError)) as e:
    input_pipeline.dataset_info(config)
  assert named in str(e.value)


def test_the_config_is_the_papers_on_200_classes():
  config = tiny_config.get_config()
  assert config.model.num_classes == 200 and config.model.width == 1.0
  assert config.data.source == "tiny_imagenet" and config.data.eval_split == "val"
  assert config.train.batch_size == 128 and config.recipe == "paper"
  assert tiny_config.get_config("caffe").recipe == "caffe"


@pytest.mark.slow
@pytest.mark.skipif(not SHARED.exists(), reason=f"needs the shared Tiny ImageNet ({SHARED})")
def test_the_shared_subset_is_read_whole(tmp_path):
  import tarfile
  with tarfile.open(SHARED) as tar:
    tar.extractall(tmp_path, filter="data")
  config = tiny_config.get_config()
  config.data.root = str(tmp_path / "tiny-imagenet-200")
  train, val = sources.open_split(config, "train"), sources.open_split(config, "val")
  assert (train.num_examples, val.num_examples) == (50_000, 10_000)
  assert np.bincount(train.labels).tolist() == [250] * 200
  assert np.bincount(val.labels).tolist() == [50] * 200
  assert train.class_names[0] == "goldfish, Carassius auratus"  # n01443537, the first wnid.
