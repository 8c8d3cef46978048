"""What has to be set before JAX starts its backends; the entry points call `configure` first
(main.py, the benchmarks, tests/conftest.py; the sweep's points run main.py).

XLA:CPU flags: jax 0.10 hands convolutions to YNNPACK by default, and YNNPACK computes the
kernel gradient of conv2 about 10x slower than XLA's own convolution (2.4-3.4 s against 0.3 s
at batch 32, one tower); a whole model=2 training step ran ~2x faster with YNNPACK kept for
matmuls only (benchmarks/train_step.py). The flags are ignored on GPU/TPU; a flag already in
XLA_FLAGS is left as the user set it.
"""
import os

import jax

CPU_XLA_FLAGS = {"xla_cpu_experimental_ynn_fusion_type": "individual_dot"}


def configure(num_cpu_devices=0):
  """Sets the XLA:CPU flags and, if > 0, splits the CPU into `num_cpu_devices` JAX devices.
  Call before anything touches a JAX device (importing jax is fine)."""
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up chatter.
  flags = os.environ.get("XLA_FLAGS", "")
  extra = [f"--{name}={value}" for name, value in CPU_XLA_FLAGS.items() if name not in flags]
  if extra:
    os.environ["XLA_FLAGS"] = " ".join([flags, *extra]).strip()
  if num_cpu_devices:
    jax.config.update("jax_num_cpu_devices", num_cpu_devices)
