r"""The README's demo: configs/paper.py at width 0.25 (3.6M parameters) on 10 generated classes,
batch 32, 3 epochs, He's init (docs/design.md, "Configs"). Expected: validation top-1 error
41.8% (chance 90%), top-5 1.0%, 10 crops 41.0% / 1.0% (experiments/results/demo/).

    python -m alexnet_jax.main --config=configs/demo.py --workdir=workdirs/demo
"""
from alexnet_jax.configs import paper


def get_config(arg=None):
  del arg
  config = paper.get_config()
  config.model.width = 0.25
  config.model.num_classes = 10
  config.model.init = "he"
  config.model.input_scale = 1 / 60    # The pixels' standard deviation is about 60.
  config.model.bias_init = 0.0
  config.mesh.model = 2
  config.mesh.num_cpu_devices = 2
  config.data.source = "generated"
  config.data.generated.num_classes = 10
  config.data.generated.train_per_class = 300
  config.data.generated.val_per_class = 50
  config.train.batch_size = 32
  config.train.learning_rate = 0.005
  config.train.num_epochs = 3
  config.train.log_every_steps = 10
  config.eval.batch_size = 50
  config.checkpoint.every_steps = 50
  return config
