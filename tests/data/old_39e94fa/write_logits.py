"""Writes input.npy and logits.npy beside this file: the evaluation step's centre-crop logits
of a run's latest step on two fixed random images, as the code of 39e94fa computes them. Run
it with that commit's package first on the path (README.md here says how):
PYTHONPATH=<checkout of 39e94fa> python write_logits.py RUN."""
import pathlib
import sys

import numpy as np

import alexnet_jax
from alexnet_jax import runtime

runtime.configure_jax(num_cpu_devices=2)

import jax  # noqa: E402

from alexnet_jax import parallel  # noqa: E402
from alexnet_jax import steps  # noqa: E402
from alexnet_jax.checkpoints import trained_run  # noqa: E402

HERE = pathlib.Path(__file__).resolve().parent


def main(workdir):
  config, params, step = trained_run.load_run(workdir, "latest")
  mesh = steps.make_mesh(config)
  size = config.data.resize_size
  images = np.random.default_rng(0).integers(0, 256, (2, size, size, 3), dtype=np.uint8)
  consts = parallel.place_replicated(mesh, trained_run.constants(workdir, config))
  logits = steps.make_eval_step(config, mesh)(params, parallel.to_global(mesh, images), consts,
                                              False)
  logits = np.asarray(jax.device_get(logits), np.float32)
  np.save(HERE / "input.npy", images)
  np.save(HERE / "logits.npy", logits)
  print(f"{alexnet_jax.__file__}, step {step}: logits {logits.shape}")


if __name__ == "__main__":
  main(pathlib.Path(sys.argv[1]))
