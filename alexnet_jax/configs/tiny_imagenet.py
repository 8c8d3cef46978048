r"""The paper's network at full width on Tiny ImageNet's 200 classes, 64x64 images scaled to 256
as ImageNet's; the argument is configs/paper.py's. 390 steps of 128 an epoch; what each recipe
did: experiments/README.md, "Three recipes on Tiny ImageNet".

    python -m alexnet_jax.data.stats --config=configs/tiny_imagenet.py \
        --config.data.root=~/data/tiny-imagenet-200
    python -m alexnet_jax.main --config=configs/tiny_imagenet.py:caffe \
        --config.data.root=~/data/tiny-imagenet-200 --workdir=workdirs/tiny_caffe
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
