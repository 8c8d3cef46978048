"""ImageNet read as it ships (source "imagenet"): the ILSVRC2012 tars with the devkit, the Kaggle
download, and extracted folders with a flat val/ and a labels file. Each small copy is labelled
image by image (each class has its own photo, so a file's bytes say its class), the devkit's
ids are out of sorted-wnid order on purpose, and each broken layout stops with one line naming
what is missing."""
import functools
import io
import os
import pathlib
import re
import shlex
import subprocess
import sys
import tarfile

import numpy as np
import pytest

from alexnet_jax import errors
from alexnet_jax import progress
from alexnet_jax.data import imagenet_layouts
from alexnet_jax.data import input_pipeline
from alexnet_jax.data import prepare
from alexnet_jax.data import sources
from alexnet_jax.data import stats
from tests import imagenet_archive
from tests import imagenet_copies as copies
from tests import tiny_config

TFDS_IMAGENET = "datasets/imagenet2012"
LAYOUTS = ("tars", "kaggle", "devkit", "devkit_tar", "kaggle_csv", "pairs")


def _config(root, tmp_path, **data):
  config = tiny_config.get_config()
  config.model.num_classes = len(copies.IDS)
  config.data.update(dict(dict(source="imagenet", root=str(root), mean="none", pca_noise_std=0.0,
                               cache_dir=str(tmp_path / "cache")), **data))
  return config


def _make(layout, tmp_path, classes):
  """(config) of a copy in `layout`."""
  root = tmp_path / "imagenet"
  if layout == "tars":
    copies.write_tars(root, classes)
    return _config(root, tmp_path, extract_dir=str(tmp_path / "extracted"))
  if layout == "kaggle":
    return _config(copies.write_kaggle(root, classes), tmp_path)
  labels = {"kaggle_csv": "kaggle"}.get(layout, layout)
  return _config(copies.write_extracted(root, classes, labels), tmp_path)


def _check_labels(split, classes, per_class):
  """Each file holds the photo of the class its label names (its bytes say which)."""
  wnids = [w for w, _ in classes]
  assert split.class_names == wnids == sorted(wnids)
  by_bytes = {data: k for k, (_, data) in enumerate(classes)}
  truth = [by_bytes[pathlib.Path(p).read_bytes()] for p in split.paths]
  assert list(split.labels) == truth
  assert np.bincount(split.labels, minlength=len(wnids)).tolist() == per_class


@pytest.mark.parametrize("layout", LAYOUTS)
def test_each_layout_is_labelled_image_by_image_by_sorted_wnid(tmp_path, layout):
  classes = copies.class_photos()
  config = _make(layout, tmp_path, classes)
  train, val = sources.open_split(config, "train"), sources.open_split(config, "val")
  _check_labels(train, classes, [copies.TRAIN_PER_CLASS] * len(classes))
  _check_labels(val, classes, np.bincount(copies.VAL_CLASSES).tolist())
  # Validation in file order, with the classes written: ILSVRC2012_val_00000001.JPEG first.
  assert [os.path.basename(p) for p in val.paths] == [copies.val_name(k) for k in range(8)]
  assert list(val.labels) == copies.VAL_CLASSES
  # The devkit's ids are another order: a reader that took (id - 1) for the label would fail.
  assert [copies.IDS[c] - 1 for c in copies.VAL_CLASSES] != copies.VAL_CLASSES


def test_the_tars_are_extracted_once_and_then_read_without_them(tmp_path):
  classes = copies.class_photos()
  config = _make("tars", tmp_path, classes)
  sources.open_split(config, "train")
  extracted = tmp_path / "extracted"
  assert sorted(os.listdir(extracted)) == ["train", "val"]
  assert sorted(os.listdir(extracted / "train")) == [".extracted.json"] + [w for w, _ in classes]
  first = os.stat(extracted / "val" / copies.val_name(0)).st_mtime_ns
  sources.open_split(config, "val")  # The same tars: their record says they are extracted.
  assert os.stat(extracted / "val" / copies.val_name(0)).st_mtime_ns == first
  os.remove(tmp_path / "imagenet" / "ILSVRC2012_img_train.tar")
  os.remove(tmp_path / "imagenet" / "ILSVRC2012_img_val.tar")
  val = sources.open_split(config, "val")  # The devkit's .tar.gz is still read in place.
  assert list(val.labels) == copies.VAL_CLASSES
  assert os.stat(extracted / "val" / copies.val_name(0)).st_mtime_ns == first


def test_an_interrupted_extraction_starts_again(tmp_path):
  classes = copies.class_photos()
  config = _make("tars", tmp_path, classes)
  partial = tmp_path / "extracted" / "train.partial" / classes[0][0]
  partial.mkdir(parents=True)
  (partial / "half_written.JPEG").write_bytes(b"\xff\xd8")
  train = sources.open_split(config, "train")
  _check_labels(train, classes, [copies.TRAIN_PER_CLASS] * len(classes))


def _offsets(path=None, data=None):
  with tarfile.open(path, fileobj=data and io.BytesIO(data)) as tar:
    return [m.offset for m in tar.getmembers()]


def _cut_a_class_tar(path):
  """The second class's tar inside `path` holds its first image only, and no end-of-archive
  block: cut at a member boundary."""
  with tarfile.open(path) as outer:
    inner = {m.name: outer.extractfile(m).read() for m in outer.getmembers()}
  name = sorted(inner)[1]
  inner[name] = inner[name][:_offsets(data=inner[name])[1]]
  with tarfile.open(path, "w") as outer:
    for member, data in inner.items():
      imagenet_archive.member(outer, member, data)
  return name


@pytest.mark.parametrize("where", ["at a member boundary", "inside a member",
                                   "a class tar at a member boundary"])
def test_a_tar_cut_short_is_refused_then_extracted_once_put_back_whole(tmp_path, where):
  """tarfile reads a tar cut between two members without complaint, as a shorter whole tar:
  its three classes must not become train/."""
  classes = copies.class_photos()
  config = _make("tars", tmp_path, classes)
  tar = tmp_path / "imagenet" / "ILSVRC2012_img_train.tar"
  whole = tar.read_bytes()
  named = f"{tar} ends after"
  if where == "at a member boundary":  # Three of the four class tars.
    tar.write_bytes(whole[:_offsets(tar)[3]])
  elif where == "inside a member":
    tar.write_bytes(whole[:_offsets(tar)[3] + 700])
    named = f"{tar} does not read as a tar"
  else:
    named = f"{_cut_a_class_tar(tar)} inside {tar} ends after"
  with pytest.raises(errors.ConfigError) as e:
    sources.open_split(config, "train")
  assert named in str(e.value) and "download it again" in str(e.value)
  assert "\n" not in str(e.value)
  assert not (tmp_path / "extracted" / "train").exists()
  tar.write_bytes(whole)
  _check_labels(sources.open_split(config, "train"), classes,
                [copies.TRAIN_PER_CLASS] * len(classes))


def test_a_replaced_tar_is_extracted_again_and_a_folder_without_its_record_refused(tmp_path):
  classes = copies.class_photos()
  config = _make("tars", tmp_path, classes)
  sources.open_split(config, "train")
  # Another download of the same classes, other photos: the record's size and mtime differ.
  other = [(w, classes[(k + 1) % len(classes)][1]) for k, (w, _) in enumerate(classes)]
  mtime = os.stat(tmp_path / "imagenet" / "ILSVRC2012_img_train.tar").st_mtime_ns
  copies.write_tars(tmp_path / "imagenet", other)
  for name in ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar"):  # Even on a coarse clock.
    os.utime(tmp_path / "imagenet" / name, ns=(mtime + 10**9, mtime + 10**9))
  _check_labels(sources.open_split(config, "train"), other, [copies.TRAIN_PER_CLASS] * 4)
  _check_labels(sources.open_split(config, "val"), other, np.bincount(copies.VAL_CLASSES).tolist())
  os.remove(tmp_path / "extracted" / "train" / ".extracted.json")  # Cut short by an older run.
  with pytest.raises(errors.ConfigError) as e:
    sources.open_split(config, "train")
  assert f"delete {tmp_path / 'extracted' / 'train'} to extract the tar again" in str(e.value)


def test_extraction_and_prepare_report_progress_with_the_time_left(tmp_path, monkeypatch):
  lines = io.StringIO()
  monkeypatch.setattr(progress, "Progress",
                      functools.partial(progress.Progress, every_s=0, stream=lines))
  # 9 MB tars: photos with a megabyte after their end (extracted, never decoded here).
  big = [(w, data + bytes(1 << 20)) for w, data in copies.class_photos()]
  sources.open_split(_make("tars", tmp_path / "big", big), "train")
  assert re.search(r"extracting ILSVRC2012_img_train.tar: 4/8 MB \(50.0%\), .* MB/s, \d+s left",
                   lines.getvalue()), lines.getvalue()
  prepare.prepare(_make("tars", tmp_path, copies.class_photos()), ["val"],
                  str(tmp_path / "out"))
  assert re.search(r"writing val: 4/8 images \(50.0%\), .* images/s, \d+s left",
                   lines.getvalue()), lines.getvalue()


def test_tfds_torchvision_and_caffe_number_the_classes_by_sorted_wnid():
  """TFDS's label file is the 1,000 wnids sorted; torchvision's ImageFolder and Caffe's
  synsets.txt sort them too, and so does this reader. The first validation image is a sea snake
  (n01751748): label 65 here, as in Caffe's val.txt ("ILSVRC2012_val_00000001.JPEG 65")."""
  import tensorflow_datasets as tfds
  folder = tfds.core.tfds_path() / TFDS_IMAGENET
  labels = (folder / "labels.txt").read_text().split()
  assert len(set(labels)) == 1000 and labels == sorted(labels)
  first_val = (folder / "validation_labels.txt").read_text().split()[0]
  assert first_val == "n01751748" and labels.index(first_val) == 65


def _full_size_kaggle(tmp_path, drop=None):
  """A Kaggle copy of all 1,000 classes (TFDS's wnids), an image each, and the first eight
  validation images with TFDS's labels; without the class `drop`'s folder."""
  import tensorflow_datasets as tfds
  folder = tfds.core.tfds_path() / TFDS_IMAGENET
  wnids = (folder / "labels.txt").read_text().split()
  val_wnids = (folder / "validation_labels.txt").read_text().split()[:8]
  photo = copies.class_photos(1)[0][1]
  root = tmp_path / "kaggle"
  images = root / "ILSVRC" / "Data" / "CLS-LOC"
  for wnid in wnids:
    if wnid != drop:
      (images / "train" / wnid).mkdir(parents=True)
      (images / "train" / wnid / f"{wnid}_1.JPEG").write_bytes(photo)
  (images / "val").mkdir()
  for k in range(8):
    (images / "val" / copies.val_name(k)).write_bytes(photo)
  (root / "LOC_synset_mapping.txt").write_text(copies.kaggle_mapping(wnids))
  (root / "LOC_val_solution.csv").write_text("ImageId,PredictionString\n" + "".join(
      f"{copies.val_name(k)[:-5]},{w} 1 2 3 4\n" for k, w in enumerate(val_wnids)))
  return root, wnids, val_wnids


def test_the_full_class_list_gives_tfds_labels(tmp_path):
  root, wnids, val_wnids = _full_size_kaggle(tmp_path)
  config = _config(root, tmp_path)
  train, val = sources.open_split(config, "train"), sources.open_split(config, "val")
  assert train.num_examples == 1000 and train.class_names == wnids
  assert [wnids[k] for k in train.labels] == [pathlib.Path(p).parent.name for p in train.paths]
  assert list(val.labels) == [wnids.index(w) for w in val_wnids]  # As TFDS labels them.


def test_999_class_folders_name_the_missing_class(tmp_path):
  root, wnids, _ = _full_size_kaggle(tmp_path, drop="n04592741")
  with pytest.raises(FileNotFoundError) as e:
    sources.open_split(_config(root, tmp_path), "train")
  assert "999 class folders for 1000 classes" in str(e.value)
  assert "n04592741" in str(e.value) and "\n" not in str(e.value)


GROUND_TRUTH = "ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt"
KAGGLE = "ILSVRC/Data/CLS-LOC"


def _damage(kind, root, wnid):
  """Breaks the copy at `root` in one way; `wnid` is a class of it."""
  if kind == "no labels file":
    os.remove(root / "val_labels.txt")
  elif kind == "no meta.mat":
    os.remove(root / "ILSVRC2012_devkit_t12" / "data" / "meta.mat")
  elif kind == "no mapping":
    os.remove(root / "LOC_synset_mapping.txt")
  elif kind == "a wnid with no folder":
    for f in os.listdir(root / KAGGLE / "train" / wnid):
      os.remove(root / KAGGLE / "train" / wnid / f)
    os.rmdir(root / KAGGLE / "train" / wnid)
  elif kind == "a validation file with no label":
    val = root / KAGGLE / "val" if (root / KAGGLE).is_dir() else root / "val"
    (val / copies.val_name(8)).write_bytes(b"")
  elif kind == "an unlabelled image in the val tar":
    with tarfile.open(root / "ILSVRC2012_img_val.tar", "a") as tar:
      imagenet_archive.member(tar, copies.val_name(8), b"")
  elif kind == "a devkit tar without meta.mat":
    with tarfile.open(root / "ILSVRC2012_devkit_t12.tar.gz", "w:gz") as tar:
      imagenet_archive.member(tar, GROUND_TRUTH, copies.ground_truth())
  elif kind == "a training class with no label":
    (root / "train" / "n00000001").mkdir()
    (root / "train" / "n00000001" / "n00000001_0.JPEG").write_bytes(copies.class_photos(1)[0][1])
  elif kind == "a label with no file":
    os.remove(root / "val" / copies.val_name(3))
  elif kind == "an id of no class":
    (root / GROUND_TRUTH).write_text("3\n1\n7\n")
  elif kind == "numbered labels":
    (root / "val_labels.txt").write_text(f"{copies.val_name(0)} 12\n")
  elif kind == "another csv":
    (root / "LOC_val_solution.csv").write_text("id,label\n")
  elif kind == "a folder of no class":
    (root / "train" / "n00000000").mkdir()
  elif kind == "a truncated devkit":
    path = root / "ILSVRC2012_devkit_t12.tar.gz"
    path.write_bytes(path.read_bytes()[:100])
  elif kind == "val in class folders":
    for k, c in enumerate(copies.VAL_CLASSES):
      os.renames(root / "val" / copies.val_name(k), root / "val" / str(c) / copies.val_name(k))


@pytest.mark.parametrize("layout, kind, split, named", [
    ("pairs", "no labels file", "val", "No validation labels in"),
    ("devkit", "no meta.mat", "val", "No meta.mat beside"),
    ("kaggle", "no mapping", "train", "LOC_synset_mapping.txt"),
    ("kaggle", "a wnid with no folder", "train", "no folder for WNID"),
    ("kaggle", "a validation file with no label", "val", "ILSVRC2012_val_00000009.JPEG"),
    ("kaggle_csv", "a label with no file", "val", "e.g. ILSVRC2012_val_00000004.JPEG"),
    ("devkit", "an id of no class", "val", "line 3: '7' is no ILSVRC2012_ID"),
    ("pairs", "numbered labels", "val", "numbers are refused"),
    ("kaggle", "another csv", "val", "not ImageId,PredictionString"),
    ("pairs", "a folder of no class", "train", "n00000000"),
    ("pairs", "val in class folders", "val", "holds class folders, not the flat validation"),
    ("devkit_tar", "a truncated devkit", "val", "ILSVRC2012_devkit_t12.tar.gz does not read"),
])
def test_a_broken_layout_stops_with_one_line_naming_what_is_missing(tmp_path, layout, kind,
                                                                     split, named):
  classes = copies.class_photos()
  config = _make(layout, tmp_path, classes)
  sources.open_split(config, split)  # Reads before the damage.
  _damage(kind, pathlib.Path(config.data.root), classes[2][0])
  with pytest.raises((FileNotFoundError, ValueError)) as e:
    sources.open_split(config, split)
  assert named.replace("WNID", classes[2][0]) in str(e.value)
  assert "\n" not in str(e.value)


@pytest.mark.parametrize("layout, kind, named", [
    ("tars", "an unlabelled image in the val tar", "ILSVRC2012_val_00000009.JPEG"),
    ("kaggle", "a validation file with no label", "ILSVRC2012_val_00000009.JPEG"),
    ("pairs", "a validation file with no label", "ILSVRC2012_val_00000009.JPEG"),
    ("kaggle_csv", "a label with no file", "e.g. ILSVRC2012_val_00000004.JPEG"),
    ("tars", "a devkit tar without meta.mat",
     "No ILSVRC2012_devkit_t12/data/meta.mat inside {root}/ILSVRC2012_devkit_t12.tar.gz"),
    ("devkit_tar", "a devkit tar without meta.mat",
     "No ILSVRC2012_devkit_t12/data/meta.mat inside {root}/ILSVRC2012_devkit_t12.tar.gz"),
    ("pairs", "a training class with no label", "1 class folder(s) that {root}/val_labels.txt "
     "gives no image: n00000001"),
])
def test_prepare_checks_everything_before_it_writes_an_image(tmp_path, layout, kind, named):
  classes = copies.class_photos()
  config = _make(layout, tmp_path, classes)
  root = pathlib.Path(config.data.root)
  _damage(kind, root, classes[2][0])
  out = tmp_path / "imagenet256"
  with pytest.raises(errors.UserError) as e:
    prepare.prepare(config, ["train", "val"], str(out))
  assert named.format(root=root) in str(e.value) and "\n" not in str(e.value)
  assert not out.exists()
  if kind == "a devkit tar without meta.mat" and layout == "tars":
    assert not (tmp_path / "extracted").exists()  # Seen before hours of extraction.


def test_a_root_with_no_layout_says_which_it_looked_for(tmp_path):
  (tmp_path / "empty").mkdir()
  with pytest.raises(FileNotFoundError, match="ILSVRC2012_img_train.tar .* Kaggle"):
    imagenet_layouts.read_split(str(tmp_path / "empty"), "train", sources.Split)


def test_prepare_writes_a_copy_the_folder_source_reads_with_the_same_labels(tmp_path):
  classes = copies.class_photos()
  config = _make("tars", tmp_path, classes)
  out = tmp_path / "imagenet72"
  assert prepare.prepare(config, ["train", "val"], str(out)) == {"train": 8, "val": 8}
  folder = _config(out, tmp_path, source="folder")
  val = sources.open_split(folder, "val")
  assert val.class_names == [w for w, _ in classes]
  assert sorted(os.path.basename(p) for p in val.paths) == sorted(
      copies.val_name(k)[:-5] + ".jpg" for k in range(8))
  by_name = dict(zip((os.path.basename(p) for p in val.paths), val.labels))
  assert [by_name[copies.val_name(k)[:-5] + ".jpg"] for k in range(8)] == copies.VAL_CLASSES


def test_stats_and_the_pipeline_read_the_kaggle_layout(tmp_path):
  classes = copies.class_photos()
  config = _make("kaggle", tmp_path, classes)
  computed = stats.compute_stats(config)
  assert int(computed["num_images"]) == 8
  assert computed["dataset"].startswith("imagenet-imagenet-")
  info = input_pipeline.dataset_info(config)
  assert info == dict(num_classes=4, num_train=8, num_eval=8, eval_split="val")
  config.data.decoded_cache = "memory"
  batch = next(input_pipeline.eval_iterator(config, "val", batch_size=8))
  assert list(batch["label"]) == copies.VAL_CLASSES


def _readme_commands():
  """The bash block of the README's "ImageNet as it ships" section, continuation lines joined."""
  text = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()
  section = text.split("### ImageNet as it ships", 1)[1]
  block = re.search(r"```bash\n(.*?)```", section, re.S).group(1).replace("\\\n", " ")
  return [line.strip() for line in block.splitlines()
          if line.strip() and not line.strip().startswith("#")]


@pytest.mark.slow
def test_the_readmes_commands_prepare_each_layout_as_written(tmp_path):
  classes = copies.class_photos()
  commands = _readme_commands()
  assert len(commands) == 4 and all("data.prepare" in c for c in commands[:3])
  roots = {"/data/ilsvrc2012": copies.write_tars(tmp_path / "tars", classes),
           "/data/imagenet-object-localization-challenge":
               copies.write_kaggle(tmp_path / "kaggle", classes),
           "/data/imagenet": copies.write_extracted(tmp_path / "extracted", classes, "devkit")}
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  for command, (name, root) in zip(commands, roots.items()):
    out_dir = tmp_path / f"prepared_{root.name}"
    argv = shlex.split(command.replace("/data/imagenet256", str(out_dir))
                       .replace(f"root={name}", f"root={root}"))
    assert argv[0] == ".venv/bin/python" and f"--config.data.root={root}" in argv
    done = subprocess.run([sys.executable, *argv[1:], "--config.data.resize_size=64",
                           "--config.data.threads=2"], cwd=pathlib.Path(__file__).parents[1],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
    assert "train: 8 images" in done.stdout and "val: 8 images" in done.stdout
    folder = sources.open_split(_config(out_dir, tmp_path, source="folder"), "val")
    assert folder.class_names == [w for w, _ in classes]
    assert sorted(folder.labels) == sorted(copies.VAL_CLASSES)
