r"""Exports a run's parameters as one `.npz` (the format: alexnet_jax/finetune.py).

    python -m alexnet_jax.tools.weights --workdir=workdirs/demo --out=demo.npz \
        [--config.eval.checkpoint=best]
"""
from absl import app
from absl import flags

from alexnet_jax import finetune
from alexnet_jax import nets
from alexnet_jax import restore
from alexnet_jax import runtime
from alexnet_jax.tools import common


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  config = common.config_from_flags()
  runtime.configure_jax(config.mesh.num_cpu_devices)
  workdir = flags.FLAGS.workdir
  config, params, step = restore.load_run(workdir, config=config)
  path = finetune.save(flags.FLAGS.out, params, config=config, step=step,
                       class_names=restore.class_names(workdir, config),
                       mean=restore.constants(workdir, config)["mean"])
  count = nets.count_params(params)
  print(f"Step {step} of {workdir}: {count:,} parameters -> {path}")
  for name, value in finetune.flatten(params).items():
    print(f"  {name:<12} {str(value.shape):<24} {value.dtype}")


if __name__ == "__main__":
  common.define_flags()
  flags.DEFINE_string("out", None, "The .npz to write.", required=True)
  app.run(main)
