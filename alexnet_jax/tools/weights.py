r"""Exports a run's parameters as one `.npz` (the format: alexnet_jax/checkpoints/weights_file.py).

    python -m alexnet_jax.tools.weights --workdir=workdirs/demo --out=demo.npz \
        [--config.eval.checkpoint=best]
"""
from absl import app
from absl import flags

from alexnet_jax import nets
from alexnet_jax.checkpoints import trained_run
from alexnet_jax.checkpoints import weights_file
from alexnet_jax.tools import common


def export(workdir, out, config=None):
  """(path, step, params): config.eval.checkpoint's step of `workdir` written to `out`."""
  config, params, step = trained_run.load_run(workdir, config=config)
  path = weights_file.save(out, params, config=config, step=step,
                           class_names=trained_run.class_names(workdir, config),
                           mean=trained_run.constants(workdir, config)["mean"])
  return path, step, params


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  config = common.config_from_flags()
  workdir = common.source()
  path, step, params = export(workdir, flags.FLAGS.out, config)
  print(f"Step {step} of {workdir}: {nets.count_params(params):,} parameters -> {path}")
  for name, value in weights_file.flatten(params).items():
    print(f"  {name:<12} {str(value.shape):<24} {value.dtype}")


if __name__ == "__main__":
  from alexnet_jax.faults import logs
  common.define_flags()
  flags.DEFINE_string("out", None, "The .npz to write.", required=True)
  app.run(logs.one_line_errors(main, "tools.weights"))
