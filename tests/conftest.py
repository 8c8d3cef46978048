"""Every test runs as the program does (runtime.configure_jax: the XLA:CPU flags), on two CPU
devices so that the two towers and data parallelism are exercised without an accelerator, and
with rank promotion an error, so that a silent broadcast of mismatched shapes fails a test."""
import contextlib
import io
import types

import jax
import pytest

from alexnet_jax import runtime

# The tests compile hundreds of small programs and run each a few times: with the CPU backend's
# LLVM optimisation level 0 XLA compiles them in about half the time (the same HLO, the numbers
# equal to float32 rounding; tests/README.md has the suite's times both ways). The programs the
# tests start inherit it through XLA_FLAGS. A level set there already is kept.
runtime.configure_jax(num_cpu_devices=2, xla_flags={"xla_backend_optimization_level": 0})
jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_platforms", "cpu")


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
  """One run of tests/tiny_config.py trained for 30 steps (He initialisation, so that images
  give different features), with a 2-step profile: the checkpoint that the tests of the
  commands reading a trained run share (restore, predict, figures, features, weights,
  progress, per-class results). Its stdout is kept for the tests of the log lines."""
  from tests import tiny_config
  from alexnet_jax import train
  root = tmp_path_factory.mktemp("tiny_run")
  config = tiny_config.get_config()
  config.data.cache_dir = str(root / "cache")
  config.model.update(init="he", input_scale=1 / 60, bias_init=0.0)
  config.train.update(num_steps=30, log_every_steps=1)
  config.checkpoint.update(every_steps=10, max_to_keep=2)
  config.profile_steps = 2
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    summary = train.train_and_evaluate(config, root / "run")
  return types.SimpleNamespace(workdir=root / "run", config=config, summary=summary,
                               stdout=out.getvalue())


@pytest.fixture(scope="session")
def tiny_weights(tiny_run):
  """tiny_run's latest step as a weights file, written as tools.weights writes it."""
  from alexnet_jax.tools import weights
  return weights.export(tiny_run.workdir, tiny_run.workdir.parent / "tiny.npz")[0]


@pytest.fixture(scope="module")
def loaded(tiny_run):
  """(config, params, step, mesh, consts) of tiny_run's latest checkpoint, as the commands
  reading a trained run load it."""
  from alexnet_jax import parallel
  from alexnet_jax.checkpoints import trained_run
  config, params, step = trained_run.load_run(tiny_run.workdir)
  mesh = parallel.make_mesh(config)
  consts = parallel.place_replicated(mesh, trained_run.constants(tiny_run.workdir, config))
  return config, params, step, mesh, consts


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
  """A data cache (generated set, statistics) shared by one test module's runs."""
  return str(tmp_path_factory.mktemp("cache"))
