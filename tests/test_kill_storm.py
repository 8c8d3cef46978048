"""benchmarks/kill_storm.py, small: three kills of a 24-step run, one of them while a
checkpoint is being written, and the final parameters bit-equal to an uninterrupted run's."""
import json
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_three_kills_end_bit_equal(tmp_path):
  out = tmp_path / "storm.json"
  done = subprocess.run([sys.executable, "benchmarks/kill_storm.py", "--kills=3", "--seed=1",
                         "--steps=24", "--every=4", f"--workdir={tmp_path / 'w'}",
                         f"--out={out}"], cwd=ROOT, capture_output=True, text=True,
                        timeout=1200)
  print(done.stdout)
  assert done.returncode == 0, done.stdout + done.stderr[-3000:]
  result = json.loads(out.read_text())
  assert result["bit_equal"] and result["seed"] == 1
  rows = result["rows"]
  assert len(rows) == 3 and all(r["signal"] in ("SIGKILL", "SIGTERM") for r in rows), rows
  assert any(r["during_save"] for r in rows), rows
  for r in rows:  # A SIGTERM saves the step it stopped after: nothing lost.
    assert r["next_resumed_from"] <= r["reached"]
    if r["signal"] == "SIGTERM":
      assert r["lost"] == 0 and r["exit"] == 75, r
  assert "| total | 3 kills |" in done.stdout and "bit-equal to" in done.stdout
