"""A config small enough for tests: the paper's network at width 1/8 on 67x67 inputs
(conv1 15x15 -> pool 7 -> pool 3 -> pool5 1x1), generated data at 80x80, 2 CPU devices.

"towers": width 1/4 (12 conv1 kernels a tower), 67x67 crops of 72x72 images, batch 4: the
network alone, for the model, parallel and train-step tests. He initialisation on pixels scaled
by 1/60, biases 0 (the demo's choice), so that the logits move with the image: with section 5's
N(0, 0.01) at this width the signal dies before fc8 and every logit is nearly its bias
(tests/test_model.py measures both).
"learnable": width 1/4 on 99x99 crops of 4 generated classes, He initialisation, 150 steps of
16: the training loss falls from ~1.6 to ~0.7 in about 20 s, enough to compare two runs."""
from alexnet_jax.configs import paper


def get_config(arg=None):
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
  if arg == "towers":
    config.model.update(width=0.25, init="he", input_scale=1 / 60, bias_init=0.0)
    config.data.resize_size = 72
    config.train.batch_size = 4
  if arg == "learnable":
    # He initialisation scales units as inverted dropout expects them (the demo's choice).
    config.model.update(width=0.25, image_size=99, num_classes=4, init="he", input_scale=1 / 60,
                        bias_init=0.0, dropout_scaling="inverted")
    config.data.resize_size = 104
    config.data.generated.update(num_classes=4, image_size=112, train_per_class=64,
                                 val_per_class=8)
    config.train.update(batch_size=16, num_steps=150, learning_rate=0.01, log_every_steps=25)
    config.eval.update(every_epochs=100, ten_crop=False, batch_size=16)
    config.checkpoint.every_steps = 1000
  return config


def model_config(**overrides):
  """config.model of get_config("towers"), with `overrides`."""
  cfg = get_config("towers").model
  cfg.update(overrides)
  return cfg
