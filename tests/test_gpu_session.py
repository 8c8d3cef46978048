"""benchmarks/gpu_session.py on the CPU: its budget stops parts before they start, and its smoke
run reaches every part (the audit's parser itself: tests/test_product_output.py)."""
import json
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _run(out, *flags, timeout=900):
  subprocess.run([sys.executable, "benchmarks/gpu_session.py", "--smoke", f"--out={out}", *flags],
                 cwd=ROOT, check=True, capture_output=True, text=True, timeout=timeout)
  return json.loads((out / "session.json").read_text())


def test_a_spent_budget_skips_every_part_and_still_writes_the_json(tmp_path):
  result = _run(tmp_path, "--budget_s=0", "--torch", timeout=300)
  assert set(result["parts"]) == {"audit", "products", "profile", "variants", "torch"}
  assert all(p["skipped"].startswith("budget") for p in result["parts"].values())


@pytest.mark.slow
def test_the_smoke_session_audits_times_profiles_and_compares(tmp_path):
  result = _run(tmp_path, "--budget_s=1500", "--batches", "8", "--step_seconds=0.2",
                "--variant_rounds=1", "--profile_steps=2", "--variants", "default",
                "model1_gathers=False")
  parts = result["parts"]
  assert not any("error" in p for p in parts.values() if isinstance(p, dict)), parts
  audit = parts["audit"]
  assert audit["product_output"] == "compute"
  assert audit["lowered"]["convolution"] == {"(bf16, bf16) -> bf16": 28}
  assert audit["counts"]["convolution"] and (tmp_path / "default_step.hlo.txt").exists()
  (row,) = parts["products"]
  assert row["batch"] == 8 and row["loss_rel_diff"] < 1e-3
  assert row["compute"]["images_per_s"] > 0 and row["float32"]["images_per_s"] > 0
  assert row["float32"]["lowered"]["convolution"]["(f32, f32) -> f32"] == 18
  assert [r["variant"] for r in parts["variants"]["rows"]] == ["default", "model1_gathers=False"]
  assert parts["profile"]["8"]["top_ops"]
