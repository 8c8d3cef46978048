r"""Section 3.3's LRN claim on CIFAR-10: the same four-layer CNN with and without normalisation.

The paper: "on the CIFAR-10 dataset a four-layer CNN achieved a 13% test error rate without
normalization and 11% with normalization". Those were cuda-convnet's layers-conv-local-13pct.cfg
and layers-conv-local-11pct.cfg, the same net (conv 64@5x5 -> [LRN] -> max-pool 3/2 -> conv
64@5x5 -> [LRN] -> max-pool 3/2 -> locally connected 32@3x3 -> locally connected 32@3x3 ->
fc 10; alexnet_jax/nets/cifar.py, layout "conv_local") with the cross-map normalisation
(size 5, scale 0.001, power 0.75) as the only difference. Input as cuda-convnet's
"cifar-cropped" provider: random 24x24 crops and mirrors of the 32x32 images, the mean image
subtracted; the centre 24x24 crop at test time. Weight decay 0.004 on the convolutions, 0.004
on the local layers and 0.01 on fc10 in the layer-params files; one value here, 0.004
(steps.sgd_momentum has a single coefficient). cuda-convnet trained these nets for hundreds of
epochs with hand-lowered learning rates; the default here is a constant rate for 100 epochs.

    python -m experiments.cifar10_data
    python -m experiments.sweep --sweep=cifar10_lrn --workdir=workdirs/sweeps/cifar10_lrn

Arguments: "lrn" (default) or "nolrn"; ",smoke" appended (or "smoke") shrinks it to a few steps.
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
