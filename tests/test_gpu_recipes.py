"""experiments/gpu_recipes.py: the subset that travels to a GPU, the step constants computed
from the decoded images, and a smoke run of the loop and its report on the CPU."""
import json
import pathlib
import subprocess
import sys
import tarfile

import numpy as np
import pytest
from alexnet_jax import preprocess
from alexnet_jax.configs import tiny_imagenet
from experiments import gpu_recipes

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_pack_keeps_the_first_images_of_each_class_in_the_datasets_layout(tmp_path):
  gpu_recipes.fabricate(str(tmp_path / "tiny-imagenet-200"), classes=3, train=5, val=3)
  src = tmp_path / "src.tar.gz"
  with tarfile.open(src, "w:gz") as t:
    t.add(tmp_path / "tiny-imagenet-200", arcname="tiny-imagenet-200")
  dest = tmp_path / "subset.tar.gz"
  assert gpu_recipes.pack(str(src), str(dest), train_per_class=2, val_per_class=1) == 3 * 2 + 3
  with tarfile.open(dest) as t:
    names = set(t.getnames())
    annotations = t.extractfile("tiny-imagenet-200/val/val_annotations.txt").read().decode()
  train = sorted(n for n in names if "/train/" in n and n.endswith(".JPEG"))
  assert [n.rsplit("/", 1)[1] for n in train] == [f"n{k:08d}_{i}.JPEG" for k in range(3)
                                                  for i in range(2)]
  val = sorted(n.rsplit("/", 1)[1] for n in names if "/val/images/" in n)
  assert val == sorted(line.split("\t")[0] for line in annotations.splitlines())
  assert [line.split("\t")[1] for line in annotations.splitlines()] == [f"n{k:08d}"
                                                                       for k in range(3)]
  assert "tiny-imagenet-200/wnids.txt" in names and "tiny-imagenet-200/words.txt" in names


def test_the_constants_are_the_mean_image_and_the_scaled_rgb_eigenvectors():
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (50, 6, 6, 3)).astype(np.uint8)
  images[..., 1] = images[..., 0] // 2 + 60  # Correlated channels: a clear first eigenvector.
  config = tiny_imagenet.get_config()
  got = gpu_recipes.constants(images, config)
  np.testing.assert_allclose(got["mean"], images.mean(0), rtol=1e-6)
  pixels = images.reshape(-1, 3).astype(np.float64)
  eigval, eigvec = np.linalg.eigh(np.cov(pixels.T, bias=True))
  eigval, eigvec = eigval[::-1], eigvec[:, ::-1]
  scale = preprocess.pca_scale(eigval, config.data.pca_scale)
  for k in range(3):  # Each column: an eigenvector, up to its sign, times its scale.
    column = got["pca"][:, k] / scale[k]
    assert abs(abs(column @ eigvec[:, k]) - 1) < 1e-4, k


@pytest.mark.slow
def test_the_smoke_run_trains_evaluates_and_writes_the_report(tmp_path):
  subprocess.run([sys.executable, "-m", "experiments.gpu_recipes", "--smoke", f"--out={tmp_path}",
                  "--budget_s=20", "--recipes", "paper"],
                 cwd=ROOT, check=True, capture_output=True, text=True, timeout=900)
  summary = json.loads((tmp_path / "recipes.json").read_text())
  (run,) = summary["runs"]
  assert run["recipe"] == "paper" and run["epochs"] >= 1 and run["steps"] == 3 * run["epochs"]
  assert summary["train_images"] == 24 and summary["classes"] == 4
  (row,) = summary["table"]
  assert row["steps"] == run["steps"] and np.isfinite(row["last_loss"])
  assert row["val_top1"] is not None
  for ext in ("csv", "md", "png"):
    assert (tmp_path / f"recipes.{ext}").stat().st_size > 0
