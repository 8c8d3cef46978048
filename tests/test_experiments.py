"""The sweep runner, its table and plots (experiments/), and figure 1's epochs-to-25%."""
import csv
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from experiments import tiny_imagenet_recipes
from experiments import sweep_report
from experiments import sweep
from experiments import named_sweeps


def test_epochs_to_reach_interpolates_first_crossing():
  epochs = [1, 2, 3, 4, 5]
  errors = [0.6, 0.4, 0.3, 0.2, 0.26]   # Crosses 0.25 between epochs 3 and 4, then rises.
  assert sweep_report.epochs_to_reach(epochs, errors, 0.25) == pytest.approx(3.5)
  assert sweep_report.epochs_to_reach(epochs, errors, 0.4) == pytest.approx(2.0)
  assert sweep_report.epochs_to_reach(epochs, errors, 0.7) == pytest.approx(1.0)
  assert sweep_report.epochs_to_reach(epochs, errors, 0.1) is None


def test_training_time_of_a_resumed_run_adds_up():
  rows = [{"step": s, "epoch": s / 10, "train_top1_error": 0.5, "elapsed_s": t}
          for s, t in [(2, 10.0), (4, 20.0), (6, 3.0), (8, 13.0)]]  # Resumed after step 4.
  assert sweep_report.train_curve(rows)[2] == [10.0, 20.0, 23.0, 33.0]


def test_epochs_to_reach_on_figure1_like_curves():
  # Exponential decays toward 10%: ReLU with time constant 2 epochs, tanh with 12.
  epochs = np.arange(1, 61, dtype=float)
  relu = 0.1 + 0.8 * np.exp(-epochs / 2.0)
  tanh = 0.1 + 0.8 * np.exp(-epochs / 12.0)
  exact = lambda tau: tau * np.log(0.8 / 0.15)  # 0.1 + 0.8 exp(-e / tau) = 0.25.
  r = sweep_report.epochs_to_reach(epochs, relu, 0.25)
  t = sweep_report.epochs_to_reach(epochs, tanh, 0.25)
  assert r == pytest.approx(exact(2.0), abs=0.1)
  assert t == pytest.approx(exact(12.0), abs=0.05)
  assert t / r == pytest.approx(6.0, rel=0.03)


def _fake_run(path, name, activation, errors, finished=True):
  run = path / name
  run.mkdir(parents=True)
  rows = []
  for i, err in enumerate(errors):
    step = (i + 1) * 10
    rows.append({"step": step, "time": 0.0, "epoch": i + 0.5, "train_loss": 1.0,
                 "train_top1_error": err + 0.01, "train_top5_error": err / 2, "elapsed_s": 5.0 * i})
    rows.append({"step": step, "time": 0.0, "epoch": float(i + 1), "epoch_train_top1_error": err,
                 "epoch_train_top5_error": err / 2, "elapsed_s": 6.0 * (i + 1)})
    rows.append({"step": step, "time": 0.0, "epoch": float(i + 1), "val_top1_error": err + 0.1,
                 "val_top5_error": err / 2 + 0.1, "elapsed_s": 6.0 * (i + 1)})
  (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  (run / "point.json").write_text(json.dumps({"overrides": {"model.activation": activation}}))
  if finished:
    (run / "summary.json").write_text(json.dumps({
        "status": "finished", "steps": 10 * len(errors), "epochs": len(errors),
        "wall_time_s": 6.0 * len(errors), "final_train_top1_error": errors[-1],
        "final_train_top5_error": errors[-1] / 2, "final_val_top1_error": errors[-1] + 0.1,
        "final_val_top5_error": errors[-1] / 2 + 0.1, "best_val_top1_error": min(errors) + 0.1,
        "best_val_top5_error": min(errors) / 2 + 0.1, "val_top1_error_10crop": None,
        "val_top5_error_10crop": None, "images_per_s": 100.0}))


def test_report_table_plots_and_ratio(tmp_path):
  _fake_run(tmp_path, "act=relu", "relu", [0.5, 0.3, 0.2, 0.15])
  _fake_run(tmp_path, "act=tanh", "tanh", [0.7, 0.6, 0.5, 0.4, 0.35, 0.3, 0.28, 0.26, 0.22, 0.2])
  paths = sweep_report.write_report(str(tmp_path), ["act=relu", "act=tanh"], threshold=0.25)
  with open(paths["csv"]) as f:
    rows = list(csv.DictReader(f))
  assert [r["run"] for r in rows] == ["act=relu", "act=tanh"]
  assert [r["model.activation"] for r in rows] == ["relu", "tanh"]
  assert float(rows[0]["final_val_top1_error"]) == pytest.approx(0.25)
  assert float(rows[1]["best_train_top1_error"]) == pytest.approx(0.2)
  # The logged window means (epoch means + 0.01, half an epoch earlier) cross 25% for ReLU
  # between 0.31 at 1.5 and 0.21 at 2.5 -> 2.1; for tanh between 0.27 at 7.5 and 0.23 at 8.5.
  assert float(rows[0]["epochs_to_0.25"]) == pytest.approx(2.1)
  assert float(rows[1]["epochs_to_0.25"]) == pytest.approx(8.0)
  md = open(paths["markdown"]).read()
  assert "act=relu" in md and "act=tanh" in md
  assert "| 25% | 2.10 | 8.00 | 3.81 |" in md
  assert "| 50% | 0.55 | 2.60 | 4.73 |" in md  # 0.51 -> 0.31 and 0.51 -> 0.41.
  for png in paths["plots"]:
    image = Image.open(png)
    assert image.format == "PNG" and image.size[0] > 300
    assert image.text["Runs"].split("\n") == ["act=relu", "act=tanh"]
  assert sorted(os.path.basename(p) for p in paths["plots"]) == [
      "fig1.png", "train_error_vs_epochs.png", "train_error_vs_time.png"]


def test_ratio_uses_each_activations_fastest_run(tmp_path):
  _fake_run(tmp_path, "relu", "relu", [0.5, 0.3, 0.2, 0.15])
  _fake_run(tmp_path, "tanh_slow", "tanh", [0.7, 0.6, 0.5, 0.45, 0.4])  # Never reaches 25%.
  _fake_run(tmp_path, "tanh_fast", "tanh", [0.7, 0.6, 0.5, 0.4, 0.35, 0.3, 0.28, 0.26, 0.22])
  paths = sweep_report.write_report(str(tmp_path), ["relu", "tanh_slow", "tanh_fast"],
                                    threshold=0.25)
  md = open(paths["markdown"]).read()
  assert "fastest run (relu; tanh_fast;" in md and "| 25% | 2.10 | 8.00 | 3.81 |" in md
  assert "- tanh_slow: not reached in 5 epochs" in md
  assert paths["plotted"]["fig1.png"] == ["relu", "tanh_fast"]
  assert paths["plotted"]["train_error_vs_epochs.png"] == ["relu", "tanh_slow", "tanh_fast"]


def test_report_of_unfinished_run_uses_its_metrics(tmp_path):
  _fake_run(tmp_path, "a", "relu", [0.6, 0.5], finished=False)
  paths = sweep_report.write_report(str(tmp_path), ["a", "missing"], threshold=0.25)
  rows = list(csv.DictReader(open(paths["csv"])))
  assert rows[0]["status"] == "unfinished" and float(rows[0]["final_val_top1_error"]) == 0.6
  assert rows[1]["status"] == "no metrics"
  assert "a: not reached in 2.0000 epochs" in open(paths["markdown"]).read()


# What each point runs instead of alexnet_jax.main (python -m, in the repository root).
FAKE_MODULE = "tests.fake_sweep_point"


def test_sweep_runs_each_point_skips_finished_and_reports_failures(tmp_path, capsys):
  workdir = tmp_path / "sweep"
  argv = ["--config=configs/paper.py:smoke", "--grid=model.activation=relu,bogus,tanh",
          "--grid=train.learning_rate=0.3", f"--workdir={workdir}", f"--module={FAKE_MODULE}"]
  assert sweep.main(argv) == 1
  out = capsys.readouterr()
  bogus = workdir / "activation=bogus,learning_rate=0.3"
  assert f"see {bogus / 'log.txt'}" in out.out and "FAILED" in out.err
  assert "config.model.activation='bogus'" in (bogus / "log.txt").read_text()
  for name in ("activation=relu,learning_rate=0.3", "activation=tanh,learning_rate=0.3"):
    assert json.loads((workdir / name / "summary.json").read_text())["status"] == "finished"
    assert "--config.model.activation=" in (workdir / name / "log.txt").read_text()
  # Again: the finished points are skipped, the failed one runs again (and fails again).
  assert sweep.main(argv) == 1
  assert (workdir / "activation=relu,learning_rate=0.3" / "calls.txt").read_text() == "run\n"
  assert (bogus / "calls.txt").read_text() == "run\nrun\n"
  assert "finished before, skipped" in capsys.readouterr().out
  rows = list(csv.DictReader(open(workdir / "results.csv")))
  assert [r["status"] for r in rows] == ["finished", "no metrics", "finished"]


def test_sweep_parallel_runs_all_points(tmp_path):
  workdir = tmp_path / "sweep"
  argv = ["--config=configs/paper.py", "--grid=train.learning_rate=0.1,0.2,0.3",
          f"--workdir={workdir}", f"--module={FAKE_MODULE}", "--parallel=2", "--set",
          "train.num_steps=2"]
  assert sweep.main(argv) == 0
  rows = list(csv.DictReader(open(workdir / "results.csv")))
  assert [float(r["final_train_top1_error"]) for r in rows] == [0.1, 0.2, 0.3]
  log = (workdir / "learning_rate=0.2" / "log.txt").read_text()
  assert "--config.train.num_steps=2" in log


def test_bad_sweep_arguments_are_refused():
  with pytest.raises(SystemExit, match="--sweep=NAME"):
    sweep.main(["--workdir=x"])
  with pytest.raises(ValueError, match="--sweep=NAME"):
    sweep.build_sweep(sweep.parse_args(["--workdir=x"]))
  with pytest.raises(ValueError, match="KEY=VALUE"):
    sweep.build_sweep(sweep.parse_args(["--workdir=x", "--config=c.py", "--grid=model.norm"]))
  with pytest.raises(ValueError, match="choose one of"):
    named_sweeps.get("nope")


def test_ready_made_sweeps_name_existing_configs_and_distinct_points():
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  for name, s in named_sweeps.SWEEPS.items():
    assert os.path.exists(os.path.join(root, s.config.partition(":")[0])), name
    names = [sweep.point_name(p) for p in s.points]
    assert len(set(names)) == len(names) >= 2, name
  fig1 = named_sweeps.get("cifar10_fig1")
  assert [p["model.activation"] for p in fig1.points] == ["relu", "tanh", "tanh", "tanh"]
  assert fig1.threshold == 0.25


@pytest.mark.slow
def test_sweep_end_to_end_on_generated_data(tmp_path):
  """Two points of the real training loop (tests/tiny_config.py, two steps each)."""
  workdir = tmp_path / "sweep"
  argv = ["--config=tests/tiny_config.py", "--grid=model.activation=relu,tanh",
          f"--workdir={workdir}", "--set", "train.num_steps=2", "--set",
          "train.log_every_steps=1", "--set", "eval.ten_crop=False", "--parallel=2"]
  assert sweep.main(argv) == 0, [(p, p.read_text()[-3000:]) for p in workdir.glob("*/log.txt")]
  rows = list(csv.DictReader(open(workdir / "results.csv")))
  assert [(r["run"], r["model.activation"], r["status"], r["steps"]) for r in rows] == [
      ("activation=relu", "relu", "finished", "2"), ("activation=tanh", "tanh", "finished", "2")]
  for r in rows:
    assert 0.0 <= float(r["final_val_top1_error"]) <= 1.0
    assert 0.0 <= float(r["best_train_top1_error"]) <= 1.0
  md = (workdir / "results.md").read_text()
  assert "activation=relu" in md and "activation=tanh" in md
  for png in ("train_error_vs_epochs.png", "train_error_vs_time.png"):
    assert Image.open(workdir / png).text["Runs"].split("\n") == [
        "activation=relu", "activation=tanh"]
  # Once finished, a point is skipped: no new process, the metrics untouched.
  before = (workdir / "activation=tanh" / "metrics.jsonl").read_text()
  assert sweep.main(argv) == 0
  assert (workdir / "activation=tanh" / "metrics.jsonl").read_text() == before
  assert (workdir / "activation=tanh" / "log.txt").read_text().count("==== ") == 1


def test_cifar_dispatch_trains_data_parallel():
  """nets routes config.model.name "cifar4" to nets/cifar.py, data-parallel on 2 devices."""
  import jax
  import numpy as np_
  from alexnet_jax import nets
  from alexnet_jax import parallel
  from alexnet_jax import steps
  from alexnet_jax.configs import cifar10_fig1
  config = cifar10_fig1.get_config("smoke")
  config.train.batch_size = 4
  mesh = parallel.make_mesh(config.mesh.model, jax.devices()[:2])
  assert dict(mesh.shape) == {"data": 2, "model": 1}
  state = steps.create_train_state(config, mesh)
  assert nets.count_params(state.params) == 89_578
  step = steps.make_train_step(config, mesh)
  rng = np_.random.default_rng(0)
  batch = {"image": rng.integers(0, 256, (4, 32, 32, 3)).astype(np_.uint8),
           "label": np_.array([0, 1, 2, 3], np_.int32)}
  batch = jax.device_put(batch, parallel.batch_sharding(mesh))
  consts = {"mean": np_.full((32, 32, 3), 128, np_.float32), "pca": np_.zeros((3, 3), np_.float32)}
  new_state, step_metrics = step(state, batch, np_.float32(0.01), consts)
  assert int(new_state.step) == 1 and np_.isfinite(float(step_metrics["loss"]))
  assert float(step_metrics["loss"]) == pytest.approx(np_.log(10.0), abs=0.05)  # Tiny init.
  wrong = config.copy_and_resolve_references()
  wrong.mesh.model = 2
  with pytest.raises(ValueError, match="mesh.model=1"):
    steps.make_apply(wrong, parallel.make_mesh(2, jax.devices()[:2]))


def test_report_does_not_load_tensorflow():
  code = "import sys\nfrom experiments import sweep_report\nprint('tensorflow' in sys.modules)"
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True,
                       check=True)
  assert out.stdout.strip() == "False"


def test_the_recipes_report_reads_each_runs_curve(tmp_path):
  for name, losses in (("paper", [5.6, 5.35, 5.31]), ("caffe", [5.30, 5.30, 5.21])):
    (tmp_path / name).mkdir()
    with open(tmp_path / name / "metrics.jsonl", "w") as f:
      for k, loss in enumerate(losses, 1):
        f.write(json.dumps({"step": 10 * k, "train_loss": loss, "train_top1_error": 0.99,
                            "train_top5_error": 0.96}) + "\n")
      if name == "caffe":
        f.write(json.dumps({"step": 30, "val_top1_error": 0.99, "val_top5_error": 0.95}) + "\n")
  rows = tiny_imagenet_recipes.write_report(str(tmp_path), ["paper", "caffe", "cuda_convnet"],
                                            str(tmp_path / "out" / "recipes"))
  assert [r["steps"] for r in rows] == [30, 30, 0]
  assert rows[0]["max_loss"] == 5.6 and rows[0]["last_loss"] == 5.31
  assert rows[1]["below_chance"] == pytest.approx(math.log(200) - 5.21)
  assert rows[1]["val_top5"] == 0.95 and rows[0]["val_top1"] is None
  lines = (tmp_path / "out" / "recipes.csv").read_text().splitlines()
  assert lines[0] == "recipe,step,train_loss,train_top1_error,train_top5_error"
  assert lines[1] == "paper,10,5.6,0.99,0.96" and len(lines) == 7
  table = (tmp_path / "out" / "recipes.md").read_text()
  assert "| caffe | 30 | 5.300 | 5.300 | 5.210 | 5.210 | +0.088 | 99.0% / 96.0% | 99.0% / 95.0% |" \
      in table
  assert (tmp_path / "out" / "recipes.png").stat().st_size > 0


def test_a_report_of_a_folder_without_runs_refuses_and_writes_nothing(tmp_path, capsys):
  """--report_only on a folder the runs are not in (a --workdir=~/... the shell left as it is)
  must not overwrite the committed table, CSV and plot with empty rows."""
  out = tmp_path / "results" / "recipes"
  out.parent.mkdir()
  out.with_suffix(".csv").write_text("committed\n")
  empty = tmp_path / "~" / "studies"
  empty.mkdir(parents=True)
  status = tiny_imagenet_recipes.main(["--workdir", str(empty), "--report_only",
                                       "--out", str(out)])
  assert status != 0
  assert str(empty) in capsys.readouterr().err
  assert out.with_suffix(".csv").read_text() == "committed\n"
  assert sorted(p.name for p in out.parent.iterdir()) == ["recipes.csv"]
  with pytest.raises(SystemExit, match="No runs in"):
    sweep_report.main(["--workdir", str(empty)])
  assert not (empty / "results.md").exists()


def test_the_recipes_study_runs_the_program_with_the_papers_batch():
  cmd = tiny_imagenet_recipes.command("caffe", "/w", "/data/t", 300, 10, sets=["mesh.model=1"])
  assert cmd[1:5] == ["-m", "alexnet_jax.main", "--config=configs/tiny_imagenet.py:caffe",
                      "--workdir=/w/caffe"]
  assert "--config.train.batch_size=128" in cmd and "--config.train.num_steps=300" in cmd
  assert "--config.mesh.model=1" in cmd and "--config.mesh.model=2" not in cmd
  assert "--config.data.max_eval_per_class=10" in cmd
