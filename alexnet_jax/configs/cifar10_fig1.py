r"""Figure 1 (3.1): ReLU against tanh in cuda-convnet's layers-18pct net on CIFAR-10, without
regularisation, until an epoch's training error is 25%. Expected: ReLU in about 6 epochs, tanh
in about 36. Argument "relu" or "tanh", ",smoke" for a few steps (docs/design.md, "Configs").

    python -m experiments.cifar10_data    # once: extracts ../shared/data/cifar10-jpeg.tar.gz
    python -m alexnet_jax.main --config=configs/cifar10_fig1.py:tanh --workdir=workdirs/fig1_tanh
    python -m experiments.sweep --sweep=cifar10_fig1 --workdir=workdirs/sweeps/cifar10_fig1
"""
from alexnet_jax.configs import common
from alexnet_jax.configs import paper

# The fastest constant rates found (experiments/README.md, "fig1_lr").
LEARNING_RATES = {"relu": 0.003, "tanh": 0.01}


def get_config(arg=None):
  args = set((arg or "relu").split(","))
  activation = "tanh" if "tanh" in args else "relu"
  config = paper.get_config()
  config.model = common.cifar_model_config(activation, layout="18pct", lrn=False)

  config.mesh.model = 1                # Data parallel only: the net has no towers.
  config.mesh.num_cpu_devices = 2      # On a CPU: one device per core of the 2-core machine.

  d = config.data
  d.source = "folder"
  d.root = common.cifar10_root()
  d.train_split, d.eval_split = "train", "test"
  d.resize_size = 32                   # The images as they are: no crop, no mirror, no noise.
  d.random_crop = False
  d.flip = False
  d.mean = "image"
  d.pca_noise_std = 0.0

  t = config.train
  t.batch_size = 128
  t.learning_rate = LEARNING_RATES[activation]
  t.momentum = 0.9
  t.weight_decay = 0.0                 # "No regularization of any kind."
  t.schedule = "step"
  t.step_epochs = ()                   # Constant rate.
  t.num_epochs = 60                    # At most; the paper's tanh net needs about 36 ...
  t.stop_at_train_error = 0.25         # ... and each run stops once an epoch's mean is 25%.
  t.log_every_steps = 50

  config.eval.batch_size = 500
  config.eval.every_epochs = 1
  config.eval.ten_crop = False         # 32x32 crops of 32x32 images: one view.
  config.checkpoint.every_steps = 1000

  if "smoke" in args:
    t.num_epochs = 1
    t.num_steps = 6
    t.log_every_steps = 2
  return config
