"""runtime.py: the XLA:CPU flags and the CPU device count, set before JAX starts its backends."""
import os
import pathlib
import subprocess
import sys

import jax
import pytest

from alexnet_jax import runtime

ROOT = pathlib.Path(__file__).resolve().parents[1]
FLAG = "--xla_cpu_experimental_ynn_fusion_type=individual_dot"


def test_the_tests_run_with_the_flags_and_two_cpu_devices():
  """tests/conftest.py calls configure_jax as the program's entry points do."""
  assert FLAG in os.environ["XLA_FLAGS"].split()
  assert jax.device_count() == 2


def test_flags_are_added_to_others_and_a_users_own_value_is_kept(monkeypatch):
  monkeypatch.setenv("XLA_FLAGS", "--xla_dump_to=/tmp/x")
  runtime.configure_jax()
  assert os.environ["XLA_FLAGS"] == f"--xla_dump_to=/tmp/x {FLAG}"
  runtime.configure_jax()  # Twice: nothing added twice.
  assert os.environ["XLA_FLAGS"] == f"--xla_dump_to=/tmp/x {FLAG}"
  monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_experimental_ynn_fusion_type=default")
  runtime.configure_jax()
  assert os.environ["XLA_FLAGS"] == "--xla_cpu_experimental_ynn_fusion_type=default"
  monkeypatch.delenv("XLA_FLAGS")
  runtime.configure_jax()
  assert os.environ["XLA_FLAGS"] == FLAG


@pytest.mark.slow
def test_main_sets_the_flags_and_the_configs_device_count_before_training(tmp_path):
  """`python -m alexnet_jax.main` in a fresh process without XLA_FLAGS, the training replaced
  by a print of what it would start with: tests/tiny_config.py asks for 2 CPU devices."""
  code = ("import os, sys, jax\nfrom absl import app\nfrom alexnet_jax import main, train\n"
          "train.train_and_evaluate = lambda config, workdir: print(os.environ['XLA_FLAGS'], "
          "jax.device_count())\n"
          f"sys.argv = ['main', '--config=tests/tiny_config.py', '--workdir={tmp_path}']\n"
          "app.run(main.main)\n")
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env["JAX_PLATFORMS"] = "cpu"
  done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-3000:]
  assert done.stdout.split() == [FLAG, "2"]
