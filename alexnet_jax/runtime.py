"""Process-wide JAX settings that only take effect before JAX starts its backends.

Every entry point (alexnet_jax.main, tests/conftest.py, benchmarks/) calls `configure_jax` before
anything touches a device; importing a module of the package changes no setting.
"""
import os

# XLA:CPU flags the program needs. jax 0.10.2 hands convolutions to YNNPACK by default, and
# YNNPACK computes the kernel gradient of conv2 about 10x slower than XLA's own convolution
# (2.4-3.4 s against 0.3 s at batch 32, one tower); a whole model=2 training step ran ~2x faster
# with YNNPACK kept for matmuls only (benchmarks/train_step.py). Ignored on GPU/TPU. A flag
# already named in XLA_FLAGS is left as it is, so setting XLA_FLAGS yourself overrides these.
CPU_XLA_FLAGS = {"xla_cpu_experimental_ynn_fusion_type": "individual_dot"}


def configure_jax(num_cpu_devices: int = 0) -> None:
  """Adds CPU_XLA_FLAGS to XLA_FLAGS and, if num_cpu_devices > 0, splits the CPU into that many
  JAX devices (config.mesh.num_cpu_devices). Call it before JAX starts its backends."""
  flags = os.environ.get("XLA_FLAGS", "")
  extra = [f"--{name}={value}" for name, value in CPU_XLA_FLAGS.items() if name not in flags]
  if extra:
    os.environ["XLA_FLAGS"] = " ".join([flags, *extra]).strip()
  if num_cpu_devices:
    import jax  # pylint: disable=g-import-not-at-top  # After XLA_FLAGS, to be safe.
    jax.config.update("jax_num_cpu_devices", num_cpu_devices)
