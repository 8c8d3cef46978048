"""predict.py on the shared tiny run: the same logits as the evaluation path for the same
images (centre crop and ten crops), and the command's text, JSON and bad-file report; from a
weights file alone, the run's predictions (the shared run's, and the committed Tiny ImageNet
run's printed ones)."""
import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from alexnet_jax import parallel
from alexnet_jax import steps
from alexnet_jax.checkpoints import trained_run
from alexnet_jax.data import input_pipeline
from alexnet_jax.data import sources
from alexnet_jax.tools import predict

ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results" / "tiny_imagenet_w01875"
SAMPLES = ROOT.parent / "shared" / "data" / "imagenet_samples"


@pytest.mark.parametrize("ten_crop", [False, True])
def test_predict_gives_the_evaluation_paths_logits(tiny_run, loaded, ten_crop):
  config, params, _, mesh, consts = loaded
  eval_step = steps.make_eval_step(config, mesh)
  batch = next(input_pipeline.eval_iterator(config, "val", batch_size=8))
  expected = np.asarray(eval_step(params, parallel.to_global(mesh, batch["image"]), consts,
                                  ten_crop))
  paths = list(sources.open_split(config, "val").paths[:8])  # The batch's files, in order.
  np.testing.assert_array_equal(batch["label"], sources.open_split(config, "val").labels[:8])
  got = predict.logits(config, params, mesh, consts, paths, ten_crop=ten_crop, batch_size=8)
  assert got.shape == expected.shape == ((8, 10, 10) if ten_crop else (8, 10))
  np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
  assert np.ptp(got[..., 0]) > 0  # Different images, different logits.
  # A batch of another size (padded) gives the same numbers for the same images.
  np.testing.assert_allclose(
      predict.logits(config, params, mesh, consts, paths[:3], ten_crop=ten_crop, batch_size=4),
      expected[:3], rtol=0, atol=1e-5)


def test_top_classes_ranks_as_evaluation_does():
  probs = np.array([[0.1, 0.3, 0.3, 0.2, 0.05, 0.05]])
  top = predict.top_classes(probs, list("abcdef"), 3)[0]
  assert [t["name"] for t in top] == ["b", "c", "d"]  # The tie goes to the lower index.
  assert top[0] == {"class": 1, "name": "b", "probability": pytest.approx(0.3)}
  ten = np.log(np.array([[[0.7, 0.3]] * 5 + [[0.1, 0.9]] * 5]))
  np.testing.assert_allclose(predict.probabilities(ten), [[0.4, 0.6]], rtol=1e-6)


@pytest.mark.slow
def test_the_command_prints_json_and_reports_bad_files(tiny_run, tmp_path):
  val = sources.open_split(tiny_run.config, "val")
  folder = pathlib.Path(val.paths[0]).parent
  bad = tmp_path / "broken.jpg"
  bad.write_bytes(b"not an image")
  done = subprocess.run(
      [sys.executable, "-m", "alexnet_jax.tools.predict", f"--workdir={tiny_run.workdir}", "--json",
       "--top=3", "--config.eval.checkpoint=best", str(folder), str(bad)],
      cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert done.returncode == 1, done.stderr[-3000:]
  assert f"{bad}: cannot be decoded:" in done.stderr
  out = json.loads(done.stdout)
  assert out["step"] == tiny_run.summary["best_step"]
  assert [p["file"] for p in out["predictions"]] == sorted(str(p) for p in folder.iterdir())
  assert out["errors"][0]["file"] == str(bad)
  names = trained_run.class_names(tiny_run.workdir, tiny_run.config)
  for p in out["predictions"]:
    probs = [t["probability"] for t in p["top"]]
    assert len(probs) == 3 and probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-6
    assert all(t["name"] == names[t["class"]] for t in p["top"])


def test_a_weights_file_predicts_as_its_run(tiny_run, loaded, tiny_weights):
  config, params, _, mesh, consts = loaded
  paths = list(sources.open_split(config, "val").paths[:8])
  expected = predict.logits(config, params, mesh, consts, paths, ten_crop=True, batch_size=8)
  config, params, step = trained_run.load_run(tiny_weights)
  consts = parallel.place_replicated(mesh, trained_run.constants(tiny_weights, config))
  assert step == 30
  np.testing.assert_array_equal(
      predict.logits(config, params, mesh, consts, paths, ten_crop=True, batch_size=8), expected)


def test_the_committed_tiny_imagenet_weights_predict_what_their_run_printed():
  """experiments/results/tiny_imagenet_w01875: predict.txt was printed from the run's workdir
  (ten crops); its weights.npz alone, with no run around it, gives the same classes and
  probabilities."""
  printed = (RESULTS / "predict.txt").read_text().splitlines()
  expected = {}
  for line in printed[1:]:
    if not line.startswith(" "):
      photo = SAMPLES / pathlib.Path(line).name
      expected[str(photo)] = []
    else:
      name, percent = line.strip().split(". ", 1)[1].rsplit(None, 1)
      expected[str(photo)].append((name, float(percent.rstrip("%"))))
  if not SAMPLES.is_dir():
    pytest.skip(f"No sample photographs at {SAMPLES} (../shared/data/imagenet_samples).")
  weights = RESULTS / "weights.npz"
  config, params, step = trained_run.load_run(weights)
  assert printed[0].startswith(f"Step {step} of ") and printed[0].endswith("ten crops:")
  mesh = parallel.make_mesh(config)
  consts = parallel.place_replicated(mesh, trained_run.constants(weights, config))
  photos = list(expected)
  probs = predict.probabilities(predict.logits(config, params, mesh, consts, photos,
                                               ten_crop=True, batch_size=8))
  tops = predict.top_classes(probs, trained_run.class_names(weights, config), 5)
  assert len(photos) == 18
  for photo, top in zip(photos, tops):
    assert [t["name"] for t in top] == [name for name, _ in expected[photo]], photo
    np.testing.assert_allclose([100 * t["probability"] for t in top],
                               [p for _, p in expected[photo]], atol=0.051, err_msg=photo)


@pytest.mark.slow
def test_the_command_reads_a_weights_file(tiny_run, tiny_weights):
  val = sources.open_split(tiny_run.config, "val")
  done = subprocess.run(
      [sys.executable, "-m", "alexnet_jax.tools.predict", f"--weights={tiny_weights}", "--json",
       "--top=3", val.paths[0]], cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  out = json.loads(done.stdout)
  assert (out["weights"], out["workdir"], out["step"]) == (str(tiny_weights), None, 30)
  config, params, _ = trained_run.load_run(tiny_run.workdir)
  mesh = parallel.make_mesh(config)
  consts = parallel.place_replicated(mesh, trained_run.constants(tiny_run.workdir, config))
  probs = predict.probabilities(predict.logits(config, params, mesh, consts, val.paths[:1],
                                               batch_size=8))
  names = trained_run.class_names(tiny_run.workdir, config)
  top = predict.top_classes(probs, names, 3)[0]
  assert [t["name"] for t in out["predictions"][0]["top"]] == [t["name"] for t in top]
  np.testing.assert_allclose([t["probability"] for t in out["predictions"][0]["top"]],
                             [t["probability"] for t in top], rtol=1e-5)
