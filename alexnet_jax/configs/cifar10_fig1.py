r"""Figure 1: ReLU against tanh in a four-layer CNN on CIFAR-10, without regularisation.

The paper: "A four-layer convolutional neural network with ReLUs (solid line) reaches a 25%
training error rate on CIFAR-10 six times faster than an equivalent network with tanh neurons
(dashed line). The learning rates for each network were chosen independently to make training
as fast as possible. No regularization of any kind was employed." (section 3.1, figure 1)

The network is cuda-convnet's layers-18pct.cfg (alexnet_jax/nets/cifar.py, layout "18pct":
conv 32@5x5 -> max-pool 3/2 -> conv 32@5x5 -> avg-pool 3/2 -> conv 64@5x5 -> avg-pool 3/2 ->
fc 10), with its two response-normalisation layers left out and the activation switchable.
"No regularisation": no weight decay, no dropout, no LRN, no crops, no mirrors, no colour
noise; only the mean image is subtracted (section 2, as cuda-convnet does). Minibatch 128 and
momentum 0.9 as in layer-params-18pct.cfg; a constant learning rate per activation, the
fastest found (experiments/README.md says which and how it was measured).

    python -m experiments.cifar10_data    # once: extracts ../shared/data/cifar10-jpeg.tar.gz
    python -m alexnet_jax.main --config=configs/cifar10_fig1.py:tanh --workdir=workdirs/fig1_tanh
    python -m experiments.sweep --sweep=cifar10_fig1 --workdir=workdirs/sweeps/cifar10_fig1

Expected (the paper): ReLU reaches 25% training error in about 6 epochs, tanh in about 36.
Each run stops at the end of the first epoch whose mean training error is at most 25%
(train.stop_at_train_error), or after 60 epochs.
Arguments: "relu" (default) or "tanh" (each with its own learning rate); ",smoke" appended
(or "smoke" alone) shrinks it to a few steps on a 2-core CPU.
"""
from alexnet_jax.configs import common
from alexnet_jax.configs import paper

# Constant learning rates (experiments/README.md): ReLU's is the best of the 100-step sweep
# ("fig1_lr"); tanh's is the fastest to 25% of the three rates run in full (0.03 won the
# 100-step sweep but stalls near 40% from epoch 8; 0.003 trails).
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
