"""weights.py: the exported .npz (layout as the README documents it) gives back identical
logits; fine-tuning starts from the given weights, resets the layers asked for, and trains."""
import contextlib
import io
import json
import math
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

from alexnet_jax import metrics
from alexnet_jax import parallel
from alexnet_jax import steps
from alexnet_jax import train
from alexnet_jax.checkpoints import trained_run
from alexnet_jax.checkpoints import weights_file
from alexnet_jax.data import sources
from alexnet_jax.data import stats
from tests import trees

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _numpy(tree):
  return jax.tree.map(np.asarray, jax.device_get(tree))


@pytest.mark.slow
def test_export_writes_the_documented_layout_and_import_gives_identical_logits(tiny_run,
                                                                              tmp_path):
  out = tmp_path / "tiny.npz"
  done = subprocess.run([sys.executable, "-m", "alexnet_jax.tools.weights",
                         f"--workdir={tiny_run.workdir}", f"--out={out}"],
                        cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  assert "conv1/kernel" in done.stdout and "325,114 parameters" in done.stdout
  with np.load(out) as f:
    shapes = {k: f[k].shape for k in f.files}
    meta = json.loads(str(f["meta"]))
  assert shapes["conv1/kernel"] == (2, 11, 11, 3, 6) and shapes["conv1/bias"] == (2, 6)
  assert shapes["conv3/kernel"] == (2, 3, 3, 32, 24)  # Both towers' conv2 maps in.
  assert shapes["fc6/kernel"] == (2, 32, 256) and shapes["fc8/kernel"] == (2, 512, 5)
  assert shapes["preprocess/mean"] == (72, 72, 3) and meta["step"] == 30
  assert meta["class_names"][0] == "00_disc_solid" and meta["model"]["width"] == 0.125

  config, params, _ = trained_run.load_run(tiny_run.workdir)
  loaded, _ = weights_file.load(out)
  trees.assert_trees_equal(loaded, _numpy(params))
  mesh = parallel.make_mesh(config)
  placed = jax.tree.map(lambda x, like: weights_file.place(x, like.sharding), loaded, params)
  consts = parallel.place_replicated(mesh, trained_run.constants(tiny_run.workdir, config))
  images = parallel.to_global(mesh, np.random.default_rng(0).integers(
      0, 256, (8, 72, 72, 3), dtype=np.uint8))
  eval_step = steps.make_eval_step(config, mesh)
  np.testing.assert_array_equal(eval_step(placed, images, consts, True),
                                eval_step(params, images, consts, True))


@pytest.mark.slow
def test_a_float16_file_is_half_the_size_and_reads_back_as_float32(tiny_run, tmp_path):
  from alexnet_jax.tools import weights
  full, _, params = weights.export(tiny_run.workdir, tmp_path / "full.npz")
  half, _, _ = weights.export(tiny_run.workdir, tmp_path / "half.npz", dtype="float16")
  assert half.stat().st_size < 0.55 * full.stat().st_size
  loaded, meta = weights_file.load(half)
  assert meta["dtype"] == "float16"
  assert {leaf.dtype for leaf in jax.tree.leaves(loaded)} == {np.dtype(np.float32)}
  rounded = jax.tree.map(lambda x: x.astype(np.float16).astype(np.float32), _numpy(params))
  trees.assert_trees_equal(loaded, rounded)
  config, half_params, _ = trained_run.load_run(half)
  mesh = parallel.make_mesh(config)
  consts = parallel.place_replicated(mesh, trained_run.constants(half, config))
  images = parallel.to_global(mesh, np.random.default_rng(0).integers(
      0, 256, (8, 72, 72, 3), dtype=np.uint8))
  eval_step = steps.make_eval_step(config, mesh)
  got, want = (np.asarray(eval_step(p, images, consts, False)) for p in (half_params, params))
  assert np.abs(got - want).max() < 1e-2 * np.abs(want).max()
  assert np.abs(got - want).max() > 0  # The rounding reached the logits: the file is float16.
  with pytest.raises(ValueError, match="--dtype=bfloat16"):
    weights.export(tiny_run.workdir, tmp_path / "x.npz", dtype="bfloat16")


def _finetune_config(tiny_run, init_from, **train_fields):
  config = tiny_run.config.copy_and_resolve_references()
  config.init_from = str(init_from)
  config.profile_steps = 0
  config.eval.update(every_epochs=100.0, ten_crop=False)
  config.checkpoint.every_steps = 1000
  config.train.update(**train_fields)
  return config


def _run(config, workdir):
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    train.train_and_evaluate(config, workdir)
  losses = [r["train_loss"] for r in metrics.read_jsonl(workdir / "metrics.jsonl")
            if "train_loss" in r]
  return out.getvalue(), losses


@pytest.mark.slow
def test_finetuning_starts_from_the_given_weights(tiny_run, tmp_path):
  """With fc8 zeroed in the file, the first loss must be exactly ln(10) (every logit 0), where
  a fresh initialisation's is not; with a learning rate of 0 the run keeps the file's weights."""
  config, params, _ = trained_run.load_run(tiny_run.workdir)
  params = _numpy(params)
  params["fc8"] = jax.tree.map(np.zeros_like, params["fc8"])
  npz = weights_file.save(tmp_path / "zero_fc8.npz", params, config=config, class_names=[], step=30)
  fresh_first = next(r["train_loss"] for r in metrics.read_jsonl(
      tiny_run.workdir / "metrics.jsonl") if r["step"] == 1)
  assert abs(fresh_first - math.log(10)) > 0.01

  config = _finetune_config(tiny_run, npz, num_steps=2, learning_rate=0.0)
  text, losses = _run(config, tmp_path / "same")
  assert f"Initialised from {npz} (step 30): conv1, conv2" in text
  assert losses[0] == pytest.approx(math.log(10), abs=1e-5)
  _, kept, _ = trained_run.load_run(tmp_path / "same")
  trees.assert_trees_equal(_numpy(kept), params)


@pytest.mark.slow
def test_finetuning_on_fewer_classes_resets_fc8_and_trains(tiny_run, tmp_path):
  generated = pathlib.Path(sources.open_split(tiny_run.config, "val").paths[0]).parents[2]
  for split in ("train", "val"):  # A 4-class image folder made of the generated set's first 4.
    (tmp_path / "four" / split).mkdir(parents=True)
    for name in sorted(os.listdir(generated / split))[:4]:
      (tmp_path / "four" / split / name).symlink_to(generated / split / name)
  source = tiny_run.workdir / "checkpoints" / "30"
  config = _finetune_config(tiny_run, source, num_steps=4, learning_rate=0.01)
  config.model.num_classes = 4
  config.data.update(source="folder", root=str(tmp_path / "four"))
  stats.save_stats(stats.compute_stats(config), stats.stats_path(config))  # Its mean image.
  mesh = parallel.make_mesh(config)
  fresh = steps.create_train_state(config, mesh).params
  with pytest.raises(ValueError, match=r"fc8/bias has shape \(2, 5\) there but \(2, 2\) in this "
                                       r"run's network; set --config.init_reset=fc8"):
    weights_file.initial_params(config, fresh, mesh)

  config.init_reset = "fc8"
  start = _numpy(weights_file.initial_params(config, fresh, mesh, log=lambda _: None))
  _, source_params, _ = trained_run.load_run(tiny_run.workdir, "30")
  source_params = _numpy(source_params)
  for layer in ("conv1", "conv5", "fc7"):
    trees.assert_trees_equal(start[layer], source_params[layer])
  trees.assert_trees_equal(start["fc8"], _numpy(fresh["fc8"]))

  text, losses = _run(config, tmp_path / "ft")
  assert "fc8 initialised afresh" in text and len(losses) == 4 and np.isfinite(losses).all()
  _, trained, step = trained_run.load_run(tmp_path / "ft")
  assert step == 4
  assert not np.array_equal(np.asarray(trained["conv1"]["kernel"]), start["conv1"]["kernel"])
  # Started again, the run resumes its own checkpoint and no longer reads init_from.
  config.train.num_steps = 6
  text, _ = _run(config, tmp_path / "ft")
  assert "Resumed from" in text and "Initialised from" not in text
