"""Process-wide settings that only take effect before JAX starts its backends (and TensorFlow
loads).

Every entry point (alexnet_jax.main, tests/conftest.py, benchmarks/) calls `configure_jax` before
anything touches a device; importing a module of the package changes no setting.
"""
import os

import jax

# XLA:CPU flags the program needs. jax 0.10.2 hands convolutions to YNNPACK by default, and
# YNNPACK computes the kernel gradient of conv2 about 10x slower than XLA's own convolution
# (2.4-3.4 s against 0.3 s at batch 32, one tower); a whole model=2 training step ran ~2x faster
# with YNNPACK kept for matmuls only (benchmarks/train_step.py). Ignored on GPU/TPU. A flag
# already named in XLA_FLAGS is left as it is, so setting XLA_FLAGS yourself overrides these.
CPU_XLA_FLAGS = {"xla_cpu_experimental_ynn_fusion_type": "individual_dot"}


def configure_jax(num_cpu_devices: int = 0) -> None:
  """Adds CPU_XLA_FLAGS to XLA_FLAGS and, if num_cpu_devices > 0, splits the CPU into that many
  JAX devices (config.mesh.num_cpu_devices); quiets TensorFlow's start-up lines unless
  TF_CPP_MIN_LOG_LEVEL is set. Call it before JAX starts its backends (importing jax is fine)
  and before TensorFlow is imported."""
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  # TensorFlow 2.21 logs "oneDNN custom operations are on" through absl's C++ logging, which
  # TF_CPP_MIN_LOG_LEVEL does not reach, once for each of its libraries that loads, each time
  # after absl's "All log messages before absl::InitializeLog()" line. Its oneDNN kernels serve
  # matmuls and convolutions, which tf.data's decoding and resizing do not run.
  os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
  flags = os.environ.get("XLA_FLAGS", "")
  extra = [f"--{name}={value}" for name, value in CPU_XLA_FLAGS.items() if name not in flags]
  if extra:
    os.environ["XLA_FLAGS"] = " ".join([flags, *extra]).strip()
  if num_cpu_devices:
    jax.config.update("jax_num_cpu_devices", num_cpu_devices)
