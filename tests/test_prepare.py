"""data/prepare.py: the 256x256 copy of a split, its class folders."""
import numpy as np
from PIL import Image
import tensorflow as tf

from alexnet_jax.configs import paper
from alexnet_jax.data import decoding
from alexnet_jax.data import prepare
from tests.small_data import SAMPLES, needs_samples


@needs_samples
def test_prepare_writes_256_copies(tmp_path):
  photos = sorted(SAMPLES.glob("*.JPEG"))[:3]
  for k, photo in enumerate(photos):
    (tmp_path / "src" / "train" / f"c{k % 2}").mkdir(parents=True, exist_ok=True)
    (tmp_path / "src" / "train" / f"c{k % 2}" / photo.name).write_bytes(photo.read_bytes())
  config = paper.get_config()
  config.data.update(source="folder", root=str(tmp_path / "src"), threads=2)
  assert prepare.write_split(config, "train", str(tmp_path / "out")) == 3
  for k, photo in enumerate(photos):
    copy = tmp_path / "out" / "train" / f"c{k % 2}" / (photo.stem + ".jpg")
    ours = decoding.decode_and_centre_crop(tf.constant(photo.read_bytes())).numpy()
    written = np.asarray(Image.open(copy), np.float32)
    assert written.shape == (256, 256, 3)
    assert np.abs(written - ours).mean() < 3.0  # JPEG q95, 4:2:0 chroma, of the same pixels.
  assert prepare.class_folders(["b", "a"]) == ["0000_b", "0001_a"]
