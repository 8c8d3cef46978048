"""per_class.py: the CSV a person opens, the five worst classes, the confusion PNG; and what
the shared tiny run wrote at its end."""
import csv

import numpy as np
import pytest
from PIL import Image

from alexnet_jax import per_class


def _result(errors1, errors5, counts, confusion=None):
  result = {"per_class": {"count": np.array(counts), "top1_error": np.array(errors1),
                          "top5_error": np.array(errors5)}}
  if confusion is not None:
    result["confusion"] = np.array(confusion)
  return result


def test_csv_worst_classes_and_confusion_png(tmp_path):
  names = ["cat", "dog", "eel", "fox"]
  confusion = [[1, 1, 0, 0], [0, 2, 0, 0], [2, 0, 0, 0], [0, 0, 0, 0]]
  centre = _result([0.5, 0.0, 1.0, np.nan], [0.0, 0.0, 0.5, np.nan], [2, 2, 2, 0], confusion)
  ten = _result([0.5, 0.5, 1.0, np.nan], [0.0, 0.0, 1.0, np.nan], [2, 2, 2, 0], confusion)
  text = per_class.report(tmp_path, 7, names, {"": centre, "_10crop": ten})
  with open(tmp_path / "per_class_step7.csv", newline="") as f:
    rows = list(csv.reader(f))
  assert rows[0] == ["class", "name", "count", "top1_error", "top5_error", "top1_error_10crop",
                     "top5_error_10crop"]
  assert rows[3] == ["2", "eel", "2", "1.000000", "0.500000", "1.000000", "1.000000"]
  assert rows[4] == ["3", "fox", "0", "", "", "", ""]  # No examples: no error.
  lines = text.splitlines()
  assert lines[0] == "The 3 classes with the highest top-1 error (10 crops):"
  assert [line.split()[0] for line in lines[1:4]] == ["eel", "cat", "dog"]
  assert "top-1 100.0%, top-5 100.0% (2 images)" in lines[1]
  assert lines[-1].startswith("Per-class errors: ") and "confusion_step7.png" in lines[-1]
  image = Image.open(tmp_path / "confusion_step7.png")
  assert image.size[0] > 200 and image.size[1] > 200


def test_the_tiny_run_wrote_its_per_class_results(tiny_run):
  with open(tiny_run.workdir / "per_class_step30.csv", newline="") as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == 10 and sum(int(r["count"]) for r in rows) == 30
  mean10 = np.mean([float(r["top1_error_10crop"]) for r in rows])  # 3 images per class.
  assert mean10 == pytest.approx(tiny_run.summary["val_top1_error_10crop"], abs=1e-6)
  assert (tiny_run.workdir / "confusion_step30.png").exists()
  assert "classes with the highest top-1 error (10 crops):" in tiny_run.stdout
