r"""Trains and evaluates AlexNet.

    python -m alexnet_jax.main --config=configs/paper.py --workdir=workdirs/paper
    python -m alexnet_jax.main --config=configs/demo.py --workdir=workdirs/demo \
        --config.train.num_epochs=2

Several hosts: the same command on every host, plus --config.distributed.mode=auto (Cloud TPU,
SLURM, Open MPI) or =manual with the coordinator's address; see README, "Several hosts".
"""
import sys

from absl import app
from absl import flags
from ml_collections import config_flags

from alexnet_jax import runtime

runtime.configure_jax()  # XLA and TensorFlow settings read when their libraries load.

import tensorflow as tf  # noqa: E402

from alexnet_jax import cluster  # noqa: E402
from alexnet_jax import logs  # noqa: E402
from alexnet_jax import preemption  # noqa: E402
from alexnet_jax import train  # noqa: E402

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    "config", None, "Configuration file, e.g. configs/paper.py or configs/paper.py:smoke.",
    lock_config=True)
flags.DEFINE_string("workdir", None, "Where checkpoints, metrics and config.json go.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  logs.setup(FLAGS.workdir, FLAGS.config.get("distributed"))  # Library chatter: a file.
  runtime.configure_jax(FLAGS.config.mesh.num_cpu_devices)  # Before JAX starts its backends.
  if "distributed" in FLAGS.config:  # Also before any device is touched.
    cluster.initialize(FLAGS.config.distributed)
  tf.config.set_visible_devices([], "GPU")  # tf.data only; the accelerators are JAX's.
  try:
    train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  except preemption.Preempted:  # Saved and said so: exit with the status that means "rerun".
    sys.exit(preemption.EXIT_STATUS)


if __name__ == "__main__":
  app.run(main)
