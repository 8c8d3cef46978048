r"""The README's demo: the paper's network, narrowed, learning the generated set on a CPU.

    python -m alexnet_jax.main --config=configs/demo.py --workdir=workdirs/demo

The paper's architecture and recipe (configs/paper.py: two towers on 2 CPU devices, ReLU, LRN,
overlapping pooling, dropout 0.5, 224x224 crops with flips and PCA noise, SGD with momentum 0.9
and weight decay 5e-4, 10-crop testing), changed only where it must be to learn in minutes on
2 cores, each change said here:
  * width 0.25: every layer a quarter as wide, 3.6M parameters instead of 61M;
  * 10 generated classes (3,000 training and 500 validation images), batch 32, 3 epochs;
  * initialisation: section 5's N(0, 0.01) with biases of 1 does not learn in minutes at this
    width (the signal across examples vanishes by conv5: measured, about 1e-6 of the logits'
    scale), so the demo uses He's sqrt(2 / fan_in) on pixels scaled by 1/60, biases 0, and a
    learning rate of 0.005.
The run committed in experiments/results/demo/ (per_class_step279.csv; README, "The two
commands"): validation top-1 error 41.8% (chance: 90%), top-5 1.0% (chance: 50%); 10 crops
41.0% / 1.0%. With the paper's init
(`--config.model.init=paper --config.model.input_scale=1 --config.model.bias_init=1
--config.train.learning_rate=0.01`) the training loss stayed at chance for the 80 steps tried.
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
