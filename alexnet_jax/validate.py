"""Refusing, before anything is written, a run that cannot work: each problem named in one line
with the setting or file at fault and what to do about it."""
import jax

from alexnet_jax import models


def check_run(config, info):
  """Refuses, before anything is written, a config that cannot train on this data and mesh."""
  models.check_config(config.model)
  if info["num_classes"] != config.model.num_classes:
    raise ValueError(
        f"The dataset has {info['num_classes']} classes but config.model.num_classes="
        f"{config.model.num_classes}: set --config.model.num_classes={info['num_classes']}.")
  devices = jax.device_count()
  for name, batch in (("train", config.train.batch_size), ("eval", config.eval.batch_size)):
    if batch % devices or batch % jax.process_count():
      raise ValueError(
          f"config.{name}.batch_size={batch} does not split evenly over the {devices} devices "
          f"of {jax.process_count()} process(es): use a multiple of {devices}.")
  target = config.train.stop_at_train_error
  if not 0.0 <= target <= 1.0:
    raise ValueError(f"config.train.stop_at_train_error={target}: a training error between 0 "
                     "and 1 (e.g. 0.25), or 0 to train all config.train.num_epochs.")
