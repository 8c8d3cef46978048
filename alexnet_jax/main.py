r"""Trains and evaluates AlexNet; on several hosts the same command on each, with
--config.distributed.mode=auto or manual (docs/several_hosts.md):

    python -m alexnet_jax.main --config=configs/paper.py --workdir=workdirs/paper
    python -m alexnet_jax.main --config=configs/demo.py --workdir=workdirs/demo \
        --config.train.num_epochs=2
"""
import logging
import re
import sys

from absl import app
from absl import flags
from ml_collections import config_flags

from alexnet_jax import runtime

runtime.configure_jax()  # XLA and TensorFlow settings read when their libraries load.

import tensorflow as tf  # noqa: E402

from alexnet_jax import errors  # noqa: E402
from alexnet_jax import train  # noqa: E402
from alexnet_jax.checkpoints import weights_file  # noqa: E402
from alexnet_jax.faults import logs  # noqa: E402
from alexnet_jax.faults import preemption  # noqa: E402

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    "config", None, "Configuration file, e.g. configs/paper.py or configs/paper.py:smoke.",
    lock_config=True)
flags.DEFINE_string("workdir", None, "Where checkpoints, metrics and config.json go.")
flags.mark_flags_as_required(["config", "workdir"])

_parsed = []  # Set once absl has parsed the flags, i.e. main() runs.


def main(argv):
  _parsed.append(True)
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  config, workdir = FLAGS.config, FLAGS.workdir
  try:
    log_path = logs.setup(workdir, config.distributed)  # Library chatter.
  except errors.UserError as e:  # No log file to point at.
    sys.exit(f"Error: {e}")
  try:
    runtime.configure_jax(config.mesh.num_cpu_devices)  # Before JAX starts its backends.
    runtime.initialize(config.distributed)  # Also before any device is touched.
    tf.config.set_visible_devices([], "GPU")  # tf.data only; the accelerators are JAX's.
    weights_file.evaluation_start(config, workdir)  # eval_only of a weights file: it as a run.
    train.train_and_evaluate(config, workdir)
  except preemption.Preempted:  # Saved and said so: exit with the status that means "rerun".
    sys.exit(preemption.EXIT_STATUS)
  except errors.UserError as e:  # The console gets the message alone, the log its traceback.
    logging.error("The run stopped.", exc_info=True, extra={"file_only": True})
    sys.exit(f"Error: {e}\n(The traceback is in {log_path}.)")


def _unknown_field(error):
  """config_flags' error for a --config.x.y naming no field, in one line with its guess."""
  text = str(error)
  field = re.search(r"\w+", text)
  guess = re.search(r"Did you mean[^?]*\?", text)
  return (f"'{field.group(0) if field else text}'." +
          (f" {guess.group(0)}" if guess else " See the config file for its fields."))


if __name__ == "__main__":
  try:
    app.run(main)
  except AttributeError as e:  # Raised while parsing a --config.* override, before main().
    if _parsed:
      raise
    sys.exit(f"Error: unknown config field {_unknown_field(e)}")
