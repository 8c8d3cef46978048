"""trained_run.py on the shared tiny run: the run's config read back (defaults filled, overrides
applied, the network's fields protected), the checkpoint that latest/best/STEP names, the run
files written at training time, and eval_only reading the step config.eval.checkpoint names; a
weights file read as the run it came from, and evaluated by eval_only."""
import contextlib
import io
import json
import pathlib
import shutil

import jax
import numpy as np
import pytest

from alexnet_jax import errors
from alexnet_jax import nets
from alexnet_jax import report
from alexnet_jax import parallel
from alexnet_jax import steps
from alexnet_jax import train
from alexnet_jax.checkpoints import manager
from alexnet_jax.checkpoints import trained_run
from tests import trees


def _checkpoint_params(workdir, config, step):
  mgr = manager.create(workdir, read_only=True)
  state, _ = manager.restore(mgr, step, steps.abstract_state(config, parallel.make_mesh(config)))
  mgr.close()
  return jax.tree.map(np.asarray, state.params)


def test_load_run_reads_the_step_that_latest_best_or_a_number_names(tiny_run):
  summary = json.loads((tiny_run.workdir / "summary.json").read_text())
  mgr = manager.create(tiny_run.workdir, read_only=True)
  steps, best = list(mgr.all_steps()), mgr.best_step()
  mgr.close()
  assert summary["best_step"] == best and best in steps and max(steps) == 30
  for which, expected in (("latest", 30), ("best", best), (str(min(steps)), min(steps)),
                          (min(steps), min(steps))):
    config, params, step = trained_run.load_run(tiny_run.workdir, which)
    assert step == expected
    trees.assert_trees_equal(params, _checkpoint_params(tiny_run.workdir, tiny_run.config,
                                                        expected))
  assert config.model.to_dict() == tiny_run.config.model.to_dict()
  with pytest.raises(ValueError, match=r"config.eval.checkpoint='7': use latest, best or one of"):
    trained_run.load_run(tiny_run.workdir, "7")


def test_read_config_fills_new_fields_applies_overrides_and_protects_the_network(tiny_run,
                                                                                 tmp_path):
  saved = json.loads((tiny_run.workdir / "config.json").read_text())
  del saved["eval"]["checkpoint"], saved["profile_steps"]  # A run older than these fields.
  (tmp_path / "config.json").write_text(json.dumps(saved))
  config = trained_run.read_config(tmp_path, {"eval.checkpoint": "best", "model.dtype": "bfloat16"})
  assert config.eval.checkpoint == "best" and config.profile_steps == 0
  assert config.model.dtype == "bfloat16" and config.model.width == 0.125
  with pytest.raises(ValueError, match="--config.model.width: the network's fields come from"):
    trained_run.read_config(tmp_path, {"model.width": 0.25})
  with pytest.raises(FileNotFoundError, match="--workdir must be a training run's folder"):
    trained_run.read_config(tmp_path / "nowhere")


def test_the_run_stores_its_class_names_and_preprocessing_constants(tiny_run, tmp_path):
  names = trained_run.class_names(tiny_run.workdir, tiny_run.config)
  assert names[:2] == ["00_disc_solid", "01_square_hstripes"] and len(names) == 10
  stored = trained_run.constants(tiny_run.workdir, tiny_run.config)
  from alexnet_jax import preprocess  # pylint: disable=g-import-not-at-top
  computed = preprocess.constants(tiny_run.config)
  for key in ("mean", "pca"):
    np.testing.assert_array_equal(stored[key], computed[key])
  shutil.copy(tiny_run.workdir / "config.json", tmp_path / "config.json")
  assert report.read_class_names(tmp_path, 4) == [f"class {k}" for k in range(4)]


@pytest.mark.slow
def test_eval_only_evaluates_the_checkpoint_config_eval_checkpoint_names(tiny_run):
  mgr = manager.create(tiny_run.workdir, read_only=True)
  first = min(mgr.all_steps())
  mgr.close()
  config = tiny_run.config.copy_and_resolve_references()
  config.eval_only = True
  config.eval.checkpoint = str(first)
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    result = train.train_and_evaluate(config, tiny_run.workdir)
  assert f"Checkpoint step {first}, split val (30 images)" in out.getvalue()
  assert (tiny_run.workdir / f"per_class_step{first}.csv").exists()
  config.eval.checkpoint = "latest"
  with contextlib.redirect_stdout(io.StringIO()):
    latest = train.train_and_evaluate(config, tiny_run.workdir)
  summary = tiny_run.summary
  assert latest["val_top1_error_10crop"] == pytest.approx(summary["val_top1_error_10crop"])
  assert result["count"] == latest["count"] == 30


def test_an_older_config_is_read_with_what_that_run_used(tmp_path):
  """A config.json from before dropout_scaling, data.resize and product_output existed
  describes a run that used inverted dropout, the 4-pixel resize and float32 products; its
  second evaluation-split field becomes the one field, data.eval_split; the implementation
  switches it kept in config.model move to config.impl (lrn_grad, whose other value computed
  the same gradient, is dropped); fields whose defaults did not change what runs do are filled."""
  from alexnet_jax.configs import paper
  old = paper.get_config().to_dict()
  old["model"].update(old.pop("impl"), pool_grad="reduce_window", lrn_grad="autodiff")
  del old["model"]["dropout_scaling"], old["data"]["resize"], old["model"]["product_output"]
  del old["model"]["layer_weight_std"], old["train"]["bias_lr_mult"]
  old["eval"]["split"] = "test"
  (tmp_path / "config.json").write_text(json.dumps(old))
  config = trained_run.read_config(tmp_path)
  assert config.model.dropout_scaling == "inverted" and config.data.resize == "fast"
  assert config.impl.product_output == "float32" and config.impl.pool_grad == "reduce_window"
  assert not {"pool_grad", "lrn_grad", "product_output"} & set(config.model)
  assert config.data.eval_split == "test" and "split" not in config.eval
  assert config.train.bias_lr_mult == 1.0 and config.model.layer_weight_std.conv3 == 0.0
  today = paper.get_config().to_dict()
  (tmp_path / "config.json").write_text(json.dumps(today))
  read = json.loads(json.dumps(trained_run.read_config(tmp_path).to_dict()))
  assert read == json.loads(json.dumps(today))  # A current one reads as written.


TINY_IMAGENET = (pathlib.Path(__file__).resolve().parents[1] / "experiments" / "results" /
                 "tiny_imagenet_w01875" / "weights.npz")


def test_a_weights_file_reads_as_the_run_it_came_from(tiny_run, tiny_weights):
  config = trained_run.read_config(tiny_weights, {"model.dtype": "bfloat16"})
  run_config, run_params, _ = trained_run.load_run(tiny_run.workdir)
  assert config.model.to_dict() == {**run_config.model.to_dict(), "dtype": "bfloat16"}
  assert (config.data.resize_size, config.data.resize) == (72, run_config.data.resize)
  config, params, step = trained_run.load_run(tiny_weights)
  assert step == 30
  trees.assert_trees_equal(params, run_params, check_sharding=True)
  assert (trained_run.class_names(tiny_weights, config)
          == trained_run.class_names(tiny_run.workdir, run_config))
  stored = trained_run.constants(tiny_run.workdir, run_config)
  np.testing.assert_array_equal(trained_run.constants(tiny_weights, config)["mean"],
                                stored["mean"])
  assert not trained_run.constants(tiny_weights, config)["pca"].any()  # No noise at test time.
  with pytest.raises(ValueError, match="--config.model.width: the network's fields come from"):
    trained_run.read_config(tiny_weights, {"model.width": 0.25})


def test_a_file_that_is_not_its_networks_is_refused_naming_the_array(tiny_weights, tmp_path):
  with np.load(tiny_weights) as f:
    arrays = {k: f[k] for k in f.files}
  np.savez(tmp_path / "short.npz", **{**arrays, "fc8/bias": arrays["fc8/bias"][:, :2]})
  with pytest.raises(errors.ConfigError, match=r"fc8/bias has shape \(2, 2\) there, but "
                                                r"\(2, 5\) in the network its meta describes"):
    trained_run.load_run(tmp_path / "short.npz")
  np.savez(tmp_path / "other.npz", **{k: v for k, v in arrays.items() if k != "meta"})
  with pytest.raises(errors.ConfigError, match="is not a weights file of this package"):
    trained_run.read_config(tmp_path / "other.npz")


def test_the_committed_tiny_imagenet_weights_read_without_their_run():
  """A file from before the weights file recorded its decoding: the size from its mean image,
  the resize at its default (the run's, as tests/test_predict.py checks against its output)."""
  config, params, step = trained_run.load_run(TINY_IMAGENET)
  assert step == 3900 and nets.count_params(params) == 2_159_840  # Its weights.txt.
  assert (config.model.width, config.model.num_classes) == (0.1875, 200)
  assert (config.data.resize_size, config.data.resize) == (256, "antialias")
  names = trained_run.class_names(TINY_IMAGENET, config)
  assert names[0] == "goldfish, Carassius auratus" and len(names) == 200


@pytest.mark.slow
def test_eval_only_evaluates_a_weights_file_with_its_network_and_mean(tiny_run, tiny_weights,
                                                                      tmp_path):
  """The command with --config.init_from=FILE.npz and another width: the file's network and
  mean, written as a run at its step, give the run's own final 10-crop error; run again, the
  same; another file in that workdir is refused."""
  from tests import program
  from tests import tiny_config

  def config(init_from):
    config = tiny_config.get_config()
    config.data.cache_dir = tiny_run.config.data.cache_dir
    config.model.width = 0.25
    config.update(eval_only=True, init_from=str(init_from))
    return config

  for _ in range(2):
    result = program.run(tmp_path / "eval", config=config(tiny_weights))
    assert result.status == 0, result.stderr[-3000:]
    line = next(x for x in result.stdout.splitlines() if x.startswith("Checkpoint step 30,"))
    assert "split val (30 images)" in line
    assert f"{tiny_run.summary['val_top1_error_10crop']:.4f} 10 crops" in line
  other = tmp_path / "other.npz"
  shutil.copy(tiny_weights, other)
  program.assert_one_line_error(program.run(tmp_path / "eval", config=config(other)),
                                "holds the run of another weights file", tmp_path / "eval")
