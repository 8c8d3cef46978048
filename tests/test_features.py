"""features.py on the shared tiny run: the maps written are the network's own (fc7 times fc8's
weights gives the evaluation logits; relu(pool5 times fc6's) gives fc6, which pins the
flattening order), with labels and file names; a stopped run goes on where it stopped; from a
weights file alone (the shared run's, the committed Tiny ImageNet run's), the same maps."""
import json
import pathlib

import jax
import numpy as np
import pytest

from alexnet_jax import parallel
from alexnet_jax import steps
from alexnet_jax.checkpoints import trained_run
from alexnet_jax.data import sources
from alexnet_jax.tools import common
from alexnet_jax.tools import features

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _write(out, loaded, layers=("fc6", "fc7", "pool5"), **kw):
  config, params, step, mesh, consts = loaded
  return features.write_split(out, config=config, params=params, step=step, mesh=mesh,
                              consts=consts, split_name="val", layers=list(layers),
                              pool="flatten", batch_size=8, **kw)


def test_features_are_the_networks_maps_with_labels_and_files(loaded, tmp_path):
  config, params, _, mesh, consts = loaded
  assert _write(tmp_path, loaded) == 30
  fc6, fc7, pool5 = (np.load(tmp_path / f"{k}.npy") for k in ("fc6", "fc7", "pool5"))
  assert fc7.shape == (30, 2 * 256) and pool5.shape == (30, 1 * 1 * 2 * 16)
  split = sources.open_split(config, "val")
  np.testing.assert_array_equal(np.load(tmp_path / "labels.npy"), split.labels)
  assert (tmp_path / "files.txt").read_text().split() == list(split.paths)
  p = jax.tree.map(lambda x: np.asarray(x, np.float64), jax.device_get(params))
  # fc8 sees both towers' fc7 (tower 0 first), halved at test time as section 4.2 scales
  # dropout; each tower owns half of the logits.
  assert config.model.dropout_scaling == "paper"
  seen = fc7 * (1.0 - config.model.dropout_rate)
  logits = np.concatenate([seen @ p["fc8"]["kernel"][t] + p["fc8"]["bias"][t] for t in (0, 1)],
                          axis=1)
  eval_step = steps.make_eval_step(config, mesh)
  expected = np.concatenate([
      np.asarray(eval_step(params, parallel.to_global(mesh, b["image"]), consts, False))
      for b in common.image_batches(config, split, batch_size=8)])[:30]
  np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4)
  fc6_again = np.concatenate([np.maximum(pool5 @ p["fc6"]["kernel"][t] + p["fc6"]["bias"][t], 0)
                              for t in (0, 1)], axis=1)
  np.testing.assert_allclose(fc6_again, fc6, rtol=1e-4, atol=1e-4)
  assert np.ptp(fc7, axis=0).max() > 0


def test_a_stopped_extraction_goes_on_where_it_stopped(loaded, tmp_path, monkeypatch):
  whole = tmp_path / "whole"
  _write(whole, loaded, layers=["fc7"])
  real = common.image_batches

  def two_batches_then_stop(*args, **kwargs):
    for i, batch in enumerate(real(*args, **kwargs)):
      if i == 2:
        raise KeyboardInterrupt
      yield batch

  stopped = tmp_path / "stopped"
  monkeypatch.setattr(common, "image_batches", two_batches_then_stop)
  with pytest.raises(KeyboardInterrupt):
    _write(stopped, loaded, layers=["fc7"])
  assert json.loads((stopped / "progress.json").read_text())["done"] == 16
  starts = []
  monkeypatch.setattr(common, "image_batches",
                      lambda *a, **k: (starts.append(k["start"]), real(*a, **k))[1])
  _write(stopped, loaded, layers=["fc7"])
  assert starts == [16]
  np.testing.assert_array_equal(np.load(stopped / "fc7.npy"), np.load(whole / "fc7.npy"))
  np.testing.assert_array_equal(np.load(stopped / "labels.npy"), np.load(whole / "labels.npy"))
  with pytest.raises(ValueError, match="holds features written with other settings"):
    _write(stopped, loaded, layers=["fc6"])


def test_unknown_layers_are_refused_with_the_ones_there_are(loaded):
  config, _, _, mesh, _ = loaded
  with pytest.raises(ValueError, match=r"choose layers among \['conv1'"):
    features.make_extract(config, mesh, ["fc9"])


def test_a_weights_file_with_the_datasets_fields_gives_the_runs_features(tiny_run, loaded,
                                                                        tiny_weights, tmp_path):
  _write(tmp_path / "run", loaded, layers=["fc7"])
  data = tiny_run.config.data  # A file names no dataset: its fields come as overrides.
  config = trained_run.read_config(tiny_weights, {
      "data.source": data.source, "data.cache_dir": data.cache_dir,
      **{f"data.generated.{k}": v for k, v in data.generated.items()}})
  config, params, step = trained_run.load_run(tiny_weights, config=config)
  mesh = parallel.make_mesh(config)
  consts = parallel.place_replicated(mesh, trained_run.constants(tiny_weights, config))
  _write(tmp_path / "file", (config, params, step, mesh, consts), layers=["fc7"])
  for name in ("fc7.npy", "labels.npy"):
    np.testing.assert_array_equal(np.load(tmp_path / "file" / name),
                                  np.load(tmp_path / "run" / name))


def test_the_committed_tiny_imagenet_weights_give_features_that_fc8_turns_into_its_logits(
    tmp_path):
  """experiments/results/tiny_imagenet_w01875/weights.npz alone, on a folder of photographs."""
  from alexnet_jax.tools import predict  # pylint: disable=g-import-not-at-top
  samples = ROOT.parent / "shared" / "data" / "imagenet_samples"
  if not samples.is_dir():
    pytest.skip(f"No sample photographs at {samples} (../shared/data/imagenet_samples).")
  photos = sorted(samples.glob("*.JPEG"))[:4]
  for photo in photos:
    (tmp_path / "photos" / "val" / photo.stem).mkdir(parents=True)
    (tmp_path / "photos" / "val" / photo.stem / photo.name).symlink_to(photo)
  weights = ROOT / "experiments" / "results" / "tiny_imagenet_w01875" / "weights.npz"
  config = trained_run.read_config(weights, {"data.source": "folder",
                                             "data.root": str(tmp_path / "photos")})
  config, params, step = trained_run.load_run(weights, config=config)
  mesh = parallel.make_mesh(config)
  consts = parallel.place_replicated(mesh, trained_run.constants(weights, config))
  assert _write(tmp_path / "out", (config, params, step, mesh, consts), layers=["fc7"]) == 4
  fc7 = np.load(tmp_path / "out" / "fc7.npy").astype(np.float64)
  assert fc7.shape == (4, 2 * 384)
  p = jax.tree.map(lambda x: np.asarray(x, np.float64), jax.device_get(params))
  logits = np.concatenate([fc7 * 0.5 @ p["fc8"]["kernel"][t] + p["fc8"]["bias"][t]
                           for t in (0, 1)], axis=1)  # Section 4.2's dropout scaling.
  expected = predict.logits(config, params, mesh, consts, [str(x) for x in photos], batch_size=4)
  np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4)
