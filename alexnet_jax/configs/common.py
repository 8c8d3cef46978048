"""What several configs and experiments/ share (as big_vision's configs/common.py): the cache
folder, CIFAR-10's root and its nets' `cifar_model_config`; configs import only configs."""
import os

import ml_collections

CACHE_DIR = "~/.cache/alexnet_jax"   # Where config.data.cache_dir="" puts generated data,
                                     # statistics and the extracted CIFAR-10.
# The CIFAR-10 nets' name and each layout's input size (nets/cifar.py reads them here).
CIFAR_MODEL_NAME = "cifar4"
CIFAR_INPUT_SIZE = {"18pct": 32, "conv_local": 24}


def cifar10_root(cache_dir=""):
  """Where experiments/cifar10_data.py extracts CIFAR-10 as an image folder:
  <cache>/cifar10-jpeg/cifar10/{train,test}/<class>/."""
  return os.path.join(os.path.expanduser(cache_dir or CACHE_DIR), "cifar10-jpeg", "cifar10")


def cifar_model_config(activation, *, layout, lrn):
  """config.model for alexnet_jax/nets/cifar.py; LRN constants are layers-conv-local-11pct's."""
  m = ml_collections.ConfigDict()
  m.name = CIFAR_MODEL_NAME
  m.layout = layout
  m.num_classes = 10
  m.image_size = CIFAR_INPUT_SIZE[layout]
  m.activation = activation
  m.norm = "lrn" if lrn else "none"
  m.lrn_convention = "caffe"           # cuda-convnet divides the scale by the window size.
  m.lrn_k = 1.0
  m.lrn_n = 5
  m.lrn_alpha = 0.001
  m.lrn_beta = 0.75
  m.dropout_rate = 0.0
  m.dtype = "float32"
  return m
