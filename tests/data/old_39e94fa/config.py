"""The run of tests/data/old_39e94fa (README.md there): tests/tiny_config.py as it stood at
39e94fa, written out so that a later change to it leaves the fixture's run alone, at width 1/32
(22,794 parameters) with He initialisation so that the logits move with the image."""
from alexnet_jax.configs import paper


def get_config(arg=None):
  del arg
  config = paper.get_config("smoke")
  config.model.update(width=1 / 32, image_size=67, init="he", input_scale=1 / 60, bias_init=0.0)
  config.mesh.num_cpu_devices = 2
  config.data.resize_size = 72
  config.data.generated.update(image_size=80, train_per_class=8, val_per_class=3)
  config.data.threads = 2
  config.train.update(batch_size=8, num_steps=4, log_every_steps=1)
  config.eval.update(batch_size=8, every_epochs=0.5, ten_crop=False)
  config.checkpoint.update(every_steps=2, max_to_keep=1)
  return config
