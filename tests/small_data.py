"""The small data the input tests share: the repository's sample photos and CIFAR-10 archive
(skipped with a reason when absent), a generated set small enough for seconds."""
import hashlib
from pathlib import Path

import numpy as np
import pytest

from alexnet_jax.configs import paper

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SAMPLES = DATA / "imagenet_samples"
GREY = ("n02096051_Airedale", "n02815834_beaker", "n03417042_garbage_truck",
        "n03908714_pencil_sharpener")
needs_samples = pytest.mark.skipif(not SAMPLES.is_dir(), reason=f"{SAMPLES} is absent")
needs_cifar = pytest.mark.skipif(not (DATA / "cifar10-jpeg.tar.gz").exists(),
                                 reason=f"{DATA / 'cifar10-jpeg.tar.gz'} is absent")



def small_config(cache_dir, **data):
  """Generated set of 4 classes at 64x64, 56x56 crops: every test here runs in seconds."""
  config = paper.get_config()
  config.model.image_size = 56
  config.data.source = "generated"
  config.data.cache_dir = str(cache_dir)
  config.data.resize_size = 64
  config.data.threads = 2
  g = config.data.generated
  g.num_classes, g.image_size, g.train_per_class, g.val_per_class = 4, 64, 10, 5
  config.data.update(data)
  return config


def digest(image):
  return hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest()


def take(iterator, n):
  return [next(iterator) for _ in range(n)]
