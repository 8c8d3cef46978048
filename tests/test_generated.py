"""data/generated.py: the generated set's classes, counts and determinism."""
from pathlib import Path

import numpy as np
import pytest

from alexnet_jax.data import generated
from alexnet_jax.data import input_pipeline
from alexnet_jax.data import sources
from tests.small_data import small_config


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
  return tmp_path_factory.mktemp("cache")

def test_generated_set_counts_classes_and_determinism(cache, tmp_path):
  config = small_config(cache)
  info = input_pipeline.dataset_info(config)
  assert info == dict(num_classes=4, num_train=40, num_eval=20, eval_split="val")
  split = sources.open_split(config, "train")
  assert split.class_names == generated.class_names(4)
  np.testing.assert_array_equal(np.bincount(split.labels), [10] * 4)
  again = small_config(tmp_path)
  again.data.generated.train_per_class = again.data.generated.val_per_class = 1
  root = Path(generated.ensure_generated(again))
  a = (root / "train" / split.class_names[3] / "00000.jpg").read_bytes()
  b = (Path(split.paths[30])).read_bytes()
  assert a == b, "The generated set must be a pure function of its settings and seed."
