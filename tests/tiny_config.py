"""A config small enough for tests: the paper's network at width 1/8 on 67x67 inputs
(conv1 15x15 -> pool 7 -> pool 3 -> pool5 1x1), generated data at 80x80, 2 CPU devices."""
from alexnet_jax.configs import paper


def get_config(arg=None):
  del arg
  config = paper.get_config("smoke")
  config.model.width = 0.125
  config.model.image_size = 67
  config.mesh.num_cpu_devices = 2
  config.data.resize_size = 72
  config.data.generated.image_size = 80
  config.data.generated.train_per_class = 8
  config.data.generated.val_per_class = 3
  config.data.threads = 2
  config.train.batch_size = 8
  config.train.num_steps = 6
  config.train.log_every_steps = 2
  config.eval.batch_size = 8
  config.eval.every_epochs = 0.5
  config.checkpoint.every_steps = 2
  return config
