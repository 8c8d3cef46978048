r"""Section 3.3's LRN claim on CIFAR-10, 13% test error without normalisation and 11% with:
cuda-convnet's layers-conv-local net, argument "lrn" or "nolrn" (",smoke": a few steps), 24x24
crops and mirrors, a constant rate for 100 epochs (docs/design.md, "Configs").

    python -m experiments.cifar10_data
    python -m experiments.sweep --sweep=cifar10_lrn --workdir=workdirs/sweeps/cifar10_lrn
"""
from alexnet_jax.configs import cifar10_fig1
from alexnet_jax.configs import common


def get_config(arg=None):
  args = set((arg or "lrn").split(","))
  config = cifar10_fig1.get_config("smoke" if "smoke" in args else None)
  config.model = common.cifar_model_config("relu", layout="conv_local",
                                           lrn="nolrn" not in args)
  config.data.random_crop = True       # 24x24 patches of the 32x32 images ...
  config.data.flip = True              # ... and their mirrors.
  config.train.learning_rate = 0.001   # layer-params-conv-local-11pct.cfg: epsW=0.001.
  config.train.weight_decay = 0.004
  config.train.stop_at_train_error = 0.0  # Figure 1's stop at 25% does not apply here.
  if "smoke" not in args:
    config.train.num_epochs = 100
  return config
