r"""Exports a run's parameters as one `.npz` (the format: alexnet_jax/checkpoints/weights_file.py).

    python -m alexnet_jax.tools.weights --workdir=workdirs/demo --out=demo.npz \
        [--dtype=float16] [--config.eval.checkpoint=best]
"""
from absl import app
from absl import flags

from alexnet_jax import nets
from alexnet_jax.checkpoints import trained_run
from alexnet_jax.checkpoints import weights_file
from alexnet_jax.tools import common


def export(workdir, out, config=None, dtype="float32"):
  """(path, step, params): config.eval.checkpoint's step of `workdir` written to `out`."""
  config, params, step = trained_run.load_run(workdir, config=config)
  path = weights_file.save(out, params, config=config, step=step,
                           class_names=trained_run.class_names(workdir, config),
                           mean=trained_run.constants(workdir, config)["mean"], dtype=dtype)
  return path, step, params


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  config = common.config_from_flags()
  workdir = common.source()
  path, step, params = export(workdir, flags.FLAGS.out, config, flags.FLAGS.dtype)
  print(f"Step {step} of {workdir}: {nets.count_params(params):,} parameters -> {path} "
        f"({path.stat().st_size / 1e6:.1f} MB)")
  for name, value in weights_file.flatten(params).items():
    print(f"  {name:<12} {str(value.shape):<24} {flags.FLAGS.dtype}")


if __name__ == "__main__":
  from alexnet_jax.faults import logs
  common.define_flags()
  flags.adopt_module_key_flags(common)  # Listed by --help, as this command's own.
  flags.DEFINE_string("out", None, "The .npz to write.", required=True)
  flags.DEFINE_enum("dtype", "float32", weights_file.DTYPES,
                    "The parameters' type in the file; float16 halves it, read back as float32.")
  app.run(logs.one_line_errors(main, "tools.weights"))
