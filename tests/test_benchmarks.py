"""The scripts of benchmarks/ run on the CPU with small settings (tests of themselves), and
accelerator.py counts the paper's FLOPs from the network."""
import importlib.util
import json
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

from alexnet_jax.configs import paper
from benchmarks import accelerator
from tests import tiny_config

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


# ---------------------------------------------------------------------------------------------
# accelerator.py --torch (benchmarks/torch_nets.py), --parts variants and profile.

torch_missing = pytest.mark.skipif(importlib.util.find_spec("torch") is None,
                                   reason="torch is not installed (pip install torch "
                                   "torchvision); it is no dependency of the package")


@torch_missing
def test_the_torch_two_tower_net_computes_jaxs_logits():
  """torch_nets.two_tower is figure 2: the paper's 60,965,224 parameters at width 1, and at the
  tests' width, with JAX's weights copied in, the same logits for the same 64x64 images (conv1's
  3-pixel overhang, as at 224), dropout off."""
  import torch
  from alexnet_jax import nets
  from alexnet_jax.nets import alexnet
  from benchmarks import torch_nets
  full = torch_nets.two_tower(torch, accelerator.torch_net_spec(paper.get_config()))
  assert torch_nets.count_params(full) == 60_965_224
  config = tiny_config.get_config("towers")
  # The torch net feeds the pixels as they come, and its LRN runs over both towers' channels
  # as one stack (torch's LocalResponseNorm over the concatenated maps).
  config.model.update(image_size=64, dropout_rate=0.0, input_scale=1.0, lrn_across_towers=True)
  spec = accelerator.torch_net_spec(config)
  assert spec["overhang"] == 3 and spec["pool5"] == 1
  params = jax.device_get(alexnet.init_params(config.model, jax.random.key(0)))
  net = torch_nets.two_tower(torch, spec).eval()
  torch_nets.load_jax_params(torch, net, params, spec)
  assert torch_nets.count_params(net) == nets.count_params(params)
  x = np.random.default_rng(0).normal(0, 50, (3, 64, 64, 3)).astype(np.float32)
  jax_net = nets.make_module(config.model, model_axis=None, data_axis=None)
  want = np.asarray(jax_net.apply({"params": params}, x))
  with torch.no_grad():
    got = net(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
  assert np.abs(want).max() > 0


@torch_missing
def test_the_torch_comparison_runs_on_the_cpu(tmp_path):
  out = tmp_path / "torch.json"
  subprocess.run([sys.executable, "benchmarks/accelerator.py", "--smoke", "--torch",
                  "--parts", "step", "--dtypes", "bfloat16", "--torch_modes", "eager",
                  "--torch_nets", "two_tower", "--step_seconds", "0.2", f"--out={out}"],
                 cwd=ROOT, check=True, capture_output=True, text=True, timeout=600)
  result = json.loads(out.read_text())["torch"]
  (row,) = result["rows"]
  assert row["net"] == "two_tower" and row["mode"] == "eager" and row["batch"] == 8
  assert row["loss_finite"] and row["images_per_s"] > 0 and row["params"] == result["jax_params"]
  (entry,) = result["table"]
  assert entry["jax"] > 0 and entry["two_tower eager"] == row["images_per_s"]
  assert entry["jax / two_tower best"] == pytest.approx(entry["jax"] / row["images_per_s"])


def test_the_variants_and_the_profile_run_on_the_cpu(tmp_path):
  """Each variant row carries its speed against the default and its losses' distance from the
  default's: 0 (float rounding) for the same computation, not for other random draws; the XLA
  flag rows come from child processes; the profile names the step's ops."""
  out = tmp_path / "variants.json"
  names = ["default", "pool_grad=reduce_window", "rng_impl=rbg"]
  subprocess.run([sys.executable, "benchmarks/accelerator.py", "--smoke", "--parts", "variants",
                  "profile", "--variants", *names, "--xla_flags", "xla_gpu_autotune_level=0",
                  "--step_seconds", "0.2", "--profile_steps", "2", f"--out={out}"],
                 cwd=ROOT, check=True, capture_output=True, text=True, timeout=600)
  result = json.loads(out.read_text())
  rows = {r["variant"]: r for r in result["variants"]["rows"]}
  assert list(rows) == names + ["XLA_FLAGS (child, none added)",
                                "XLA_FLAGS --xla_gpu_autotune_level=0"]
  for name, row in rows.items():
    assert "error" not in row and row["images_per_s"] > 0 and np.isfinite(row["speed_vs_default"])
    assert len(row["first_losses"]) == 3 and all(np.isfinite(row["first_losses"])), name
    if row["numbers"] == "same":
      assert row["loss_rel_diff"] < 1e-5, (name, row["first_losses"])
  assert rows["rng_impl=rbg"]["loss_rel_diff"] > 1e-4
  assert rows["default"]["speed_vs_default"] == 1.0
  ops = result["profile"]["top_ops"]
  assert ops and all(op["ms_per_step"] > 0 and op["op"].startswith("jit_train_step/")
                     for op in ops)
  assert sum(op["share"] for op in ops) <= 1.0 + 1e-9


def test_every_variant_is_a_config_switch_whose_default_is_todays_step():
  """VARIANTS names config fields that exist, each set to a value its owner accepts, never the
  default (tests/test_alexnet.py and test_preprocess.py check each one's numbers)."""
  from alexnet_jax import preprocess
  from alexnet_jax.nets import layers
  defaults = paper.get_config()
  allowed = {**{f"impl.{k}": v for k, v in layers.IMPL.items()},
             "data.crop_op": preprocess.CROP_OPS, "rng_impl": ("", "rbg", "unsafe_rbg")}
  assert accelerator.VARIANTS["default"] == ({}, "same")
  for name, (overrides, numbers) in accelerator.VARIANTS.items():
    assert numbers in ("same", "rounded", "draws"), name
    for field, value in overrides.items():
      default = defaults
      for part in field.split("."):
        default = default[part]
      assert default == allowed[field][0] != value and value in allowed[field], (name, field)


def test_rbg_keys_draw_the_same_masks_and_crops_on_any_mesh():
  """config.rng_impl="rbg" on the whole step: other losses than threefry's, the same at model=1
  (both towers on each device, the batch split in two) as at model=2."""
  def losses(overrides, model_axis):
    config = tiny_config.get_config("towers")
    config.data.update(mean="none", pca_noise_std=0.0)  # No statistics to compute.
    config.update_from_flattened_dict(overrides)
    step, state, batch, consts = accelerator.prepared_step(config, model_axis)
    out = []
    for _ in range(2):
      state, metrics = step(state, batch, np.float32(0.01), consts)
      out.append(float(metrics["loss"]))
    return np.array(out)

  rbg = losses({"rng_impl": "rbg"}, 1)
  np.testing.assert_allclose(losses({"rng_impl": "rbg"}, 2), rbg, rtol=1e-5)
  assert np.all(np.isfinite(rbg)) and not np.allclose(rbg, losses({}, 1), rtol=1e-4)


def test_the_soak_runs_the_command_that_aborted_beside_busy_processes(tmp_path):
  """The demo at width 1/8, batch 8, a line every 2,000 steps: the command XLA:CPU's rendezvous
  once aborted (exit 134) when the loop ran ahead of its steps; shortened, beside 2 spinners."""
  out = tmp_path / "soak.json"
  proc = subprocess.run(
      [sys.executable, "benchmarks/soak.py", "--cases=0.125:8:2000:150", "--busy=2",
       f"--cache_dir={tmp_path / 'cache'}", f"--log={tmp_path / 'soak.log'}", f"--out={out}",
       "--set=--config.data.generated.train_per_class=16 "
       "--config.data.generated.val_per_class=4"],
      cwd=ROOT, capture_output=True, text=True, timeout=900)
  result = json.loads(out.read_text())
  (case,) = result["cases"]
  assert proc.returncode == 0, (proc.stdout, (tmp_path / "soak.log").read_text()[-3000:])
  assert case["exit"] == 0 and not case["hang"] and case["steps_finished"] == 150
  assert result["total"] == {**result["total"], "aborts": 0, "hangs": 0, "busy_processes": 2}
