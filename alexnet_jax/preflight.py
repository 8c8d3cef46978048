"""Refusing, before anything is written, a run that cannot work: each problem named in one line
with the setting or file at fault and what to do about it."""
import jax

from alexnet_jax import errors
from alexnet_jax import nets
from alexnet_jax import paths
from alexnet_jax.data import decoded_cache
from alexnet_jax.data import decoding
from alexnet_jax.nets import layers


def check_workdir(workdir):
  path = paths.root(workdir)
  if path.exists() and not path.is_dir():
    raise errors.ConfigError(f"--workdir={workdir} is a file; give a directory (it is created "
                             "when missing).")


def check_settings(config):
  """The settings that cannot work whatever the data: sizes, rates, counts."""
  nets.check_config(config.model)
  layers.impl_config(config.impl)
  positive = {"train.batch_size": config.train.batch_size,
              "eval.batch_size": config.eval.batch_size,
              "train.log_every_steps": config.train.log_every_steps,
              "train.steps_in_flight": config.train.steps_in_flight,
              "eval.every_epochs": config.eval.every_epochs,
              "checkpoint.every_steps": config.checkpoint.every_steps,
              "checkpoint.max_to_keep": config.checkpoint.max_to_keep,
              "data.resize_size": config.data.resize_size}
  if not config.train.num_steps:
    positive["train.num_epochs"] = config.train.num_epochs
  for name, value in positive.items():
    if not value > 0:
      raise errors.ConfigError(f"config.{name}={value} must be positive.")
  for name, value in (("train.num_steps", config.train.num_steps),
                      ("train.learning_rate", config.train.learning_rate),  # 0 keeps weights.
                      ("train.weight_decay", config.train.weight_decay)):
    if value < 0:
      raise errors.ConfigError(f"config.{name}={value} must not be negative.")
  decoding.resize_of(config)  # Raises for an unknown resize.
  decoded_cache.mode_of(config)  # And for a decoded cache that cannot be made.
  if config.model.image_size > config.data.resize_size:
    raise errors.ConfigError(
        f"config.model.image_size={config.model.image_size} crops cannot come from images of "
        f"config.data.resize_size={config.data.resize_size}: make resize_size at least "
        "image_size.")
  if not 0.0 <= config.train.momentum < 1.0:
    raise errors.ConfigError(f"config.train.momentum={config.train.momentum}: in [0, 1) (0.9 in "
                             "the paper, section 5).")
  if not 0.0 <= config.train.stop_at_train_error <= 1.0:
    raise errors.ConfigError(
        f"config.train.stop_at_train_error={config.train.stop_at_train_error}: a training error "
        "between 0 and 1 (e.g. 0.25), or 0 to train all config.train.num_epochs.")


def check_run(config, info):
  """Refuses a config that cannot train on this data and these devices."""
  if info["num_classes"] != config.model.num_classes:
    raise errors.ConfigError(
        f"The dataset has {info['num_classes']} classes but config.model.num_classes="
        f"{config.model.num_classes}: set --config.model.num_classes={info['num_classes']}.")
  devices = jax.device_count()
  for name, batch in (("train", config.train.batch_size), ("eval", config.eval.batch_size)):
    if batch % devices or batch % jax.process_count():
      raise errors.ConfigError(
          f"config.{name}.batch_size={batch} does not split evenly over the {devices} devices "
          f"of {jax.process_count()} process(es): use a multiple of {devices}.")
