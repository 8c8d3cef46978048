"""Two CPU devices, the entry points' XLA flags and strict numpy semantics for every test."""
import jax

from alexnet_jax import runtime

runtime.configure(num_cpu_devices=2)
jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_platforms", "cpu")
