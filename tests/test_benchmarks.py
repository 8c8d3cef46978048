"""The scripts of benchmarks/ run on the CPU with small settings (tests of themselves), and
accelerator.py counts the paper's FLOPs from the network."""
import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from alexnet_jax.configs import paper
from benchmarks import accelerator

pytestmark = pytest.mark.slow  # Real processes: see setup.cfg's markers.


ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_flops_are_counted_from_the_papers_layers():
  """2 FLOPs per multiply-add; conv1 55x55x96 of 11x11x3, conv2 27x27x256 of 5x5x48 (its own
  tower), conv3 13x13x384 of 3x3x256, conv4 13x13x384 and conv5 13x13x256 of 3x3x192, fc
  9216-4096-4096-1000. Training: forward + both backward products, less conv1's input
  gradient."""
  forward = 2 * (55 * 55 * 96 * 363 + 27 * 27 * 256 * 1200 + 13 * 13 * 384 * 2304
                 + 13 * 13 * 384 * 1728 + 13 * 13 * 256 * 1728 + 9216 * 4096 + 4096 * 4096
                 + 4096 * 1000)
  got = accelerator.flops_per_image(paper.get_config().model)
  assert got == {"forward": forward, "training": 3 * forward - 2 * 55 * 55 * 96 * 363}
  assert 4.1e9 < got["training"] < 4.2e9


def test_the_benchmark_runs_on_the_cpu(tmp_path):
  out = tmp_path / "smoke.json"
  subprocess.run([sys.executable, "benchmarks/accelerator.py", "--smoke", f"--out={out}",
                  "--parts", "device", "step", "end_to_end"], cwd=ROOT, check=True,
                 capture_output=True, text=True, timeout=600)
  result = json.loads(out.read_text())
  assert result["platform"] == "cpu" and result["smoke"]
  assert {(r["dtype"], r["batch"]) for r in result["step"]} == {("bfloat16", 8), ("float32", 8)}
  for row in result["step"]:
    assert "error" not in row and row["loss_finite"] and row["images_per_s"] > 0, row
    assert row["mfu"] is None  # No datasheet peak for a CPU.
  assert result["end_to_end"]["steps"] == 8 and result["end_to_end"]["images_per_s"] > 0
  assert 0 <= result["end_to_end"]["input_wait_fraction"] <= 1
  assert all(np.isfinite(v) for v in result["matmul_tflops"].values())


# benchmarks/train_step.py and benchmarks/input_pipeline.py, run as a user runs them, at tiny
# sizes: the scripts keep working when the package changes under them.

def test_train_step_benchmark_runs(tmp_path):
  out = tmp_path / "step.json"
  subprocess.run([sys.executable, "benchmarks/train_step.py", "--batch", "2", "--model", "2",
                  "--width", "0.125", "--torch", "none", "--steps", "1", f"--out={out}"],
                 cwd=ROOT, check=True, capture_output=True, text=True, timeout=300)
  result = json.loads(out.read_text())
  assert result["width"] == 0.125
  assert [(r["case"], r["batch"]) for r in result["rows"]] == [("jax model=2", 2)]
  for row in result["rows"]:
    for key in ("images_per_s_median", "images_per_s_best", "first_s"):
      assert np.isfinite(row[key]) and row[key] > 0, row


SAMPLES = ROOT.parent / "shared" / "data" / "imagenet_samples"


@pytest.mark.skipif(not SAMPLES.is_dir(), reason=f"{SAMPLES} is absent")
def test_input_pipeline_benchmark_runs(tmp_path):
  out = tmp_path / "pipeline.json"
  subprocess.run([sys.executable, "benchmarks/input_pipeline.py", "--n", "24", "--batch", "8",
                  "--repeats", "1", f"--out={out}"], cwd=ROOT, check=True, capture_output=True,
                 text=True, timeout=300)
  result = json.loads(out.read_text())
  ours = [r for r in result["pipelines"] if r["name"].startswith("tf.data")]
  assert len(ours) == 6
  for row in result["pipelines"]:  # The PIL + DataLoader rows are None where torch is absent.
    for key in ("images_per_s", "cpu_ms_per_image"):
      assert row[key] is None or (np.isfinite(row[key]) and row[key] > 0), row
  assert all(r["images_per_s"] and r["cpu_ms_per_image"] for r in ours)
  decode = {r["name"]: r for r in result["decode"]}
  assert len(decode) == 8
  for row in decode.values():
    assert np.isfinite(row["images_per_s"]) and row["images_per_s"] > 0, row
    assert np.isfinite(row["cpu_ms_per_image"]) and row["cpu_ms_per_image"] > 0, row
    assert 0 <= row["mean_abs_diff"] < 5, row
  # The iterator decodes with the pipeline's decoder; the decoded cache gathers its images.
  for name in ("project's iterator (train_iterator), from files",
               "decoded cache (memory): train_iterator gathers"):
    assert decode[name]["mean_abs_diff"] == 0, name
  assert {v["name"] for v in result["verdicts"]} < set(decode)
