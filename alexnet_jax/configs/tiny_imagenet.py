r"""The paper's network at full width on Tiny ImageNet: 200 ImageNet classes, read in the
dataset's own layout (alexnet_jax/data/tiny_imagenet.py), each 64x64 image scaled up to 256 as
ImageNet's are, so the network sees the 224 crops it would see on ImageNet.

    python -m alexnet_jax.data.stats --config=configs/tiny_imagenet.py \
        --config.data.root=~/data/tiny-imagenet-200
    python -m alexnet_jax.main --config=configs/tiny_imagenet.py:caffe \
        --config.data.root=~/data/tiny-imagenet-200 --workdir=workdirs/tiny_caffe

The argument picks a recipe of configs/recipes.py (`paper`, `cuda_convnet`, `caffe`; none is
`paper`), as configs/paper.py's does. Everything else is the paper's. 50,000 training images
(500 a class in the dataset's download; the shared subset has 250) make an epoch of 390 steps
of 128; the 10,000 validation images are the evaluation split. experiments/README.md, "Three
recipes on Tiny ImageNet", has what each recipe did here.
"""
from alexnet_jax.configs import paper


def get_config(arg=None):
  config = paper.get_config(arg)
  config.model.num_classes = 200
  config.data.source = "tiny_imagenet"
  config.data.root = "~/data/tiny-imagenet-200"
  config.data.train_split = "train"
  config.data.eval_split = "val"
  config.train.log_every_steps = 10
  config.checkpoint.every_steps = 500
  return config
