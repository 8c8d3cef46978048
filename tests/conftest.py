"""Every test runs as the program does (runtime.configure_jax: the XLA:CPU flags), on two CPU
devices so that the two towers and data parallelism are exercised without an accelerator, and
with rank promotion an error, so that a silent broadcast of mismatched shapes fails a test."""
import jax

from alexnet_jax import runtime

runtime.configure_jax(num_cpu_devices=2)
jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_platforms", "cpu")
