r"""CIFAR-10 as an image folder: extracts ../shared/data/cifar10-jpeg.tar.gz once into a cache
and computes the training-set mean (4.1) that configs/cifar10_*.py subtract.

    python -m experiments.cifar10_data            # prints the folder; a few seconds the first time

The sweeps call `prepare` themselves. A machine without the archive gets a message saying
where to put it (or how to use TFDS `cifar10` instead).
"""
import os
import pathlib
import tarfile

from alexnet_jax.configs import cifar10_fig1

ARCHIVE = (pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data" /
           "cifar10-jpeg.tar.gz")


def archive_path():
  return pathlib.Path(os.environ.get("ALEXNET_JAX_CIFAR10_ARCHIVE", ARCHIVE))


def ensure_extracted(root):
  """Extracts the archive so that `root` holds train/ and test/; returns root."""
  root = os.path.expanduser(root)
  if os.path.exists(os.path.join(root, ".complete")):
    return root
  archive = archive_path()
  if not archive.exists():
    raise FileNotFoundError(
        f"CIFAR-10 is not at {root} and the archive {archive} is absent. Put "
        "cifar10-jpeg.tar.gz there (or set ALEXNET_JAX_CIFAR10_ARCHIVE), or point "
        "--config.data.root at a folder holding train/<class>/*.jpg and test/<class>/*.jpg, or "
        "use TFDS: --config.data.source=tfds --config.data.name=cifar10 "
        "--config.data.train_split=train --config.data.eval_split=test.")
  parent = os.path.dirname(root.rstrip("/"))
  os.makedirs(parent, exist_ok=True)
  with tarfile.open(archive) as tar:
    members = [m for m in tar.getmembers() if m.name.startswith("cifar10/")]
    tar.extractall(parent, members=members, filter="data")
  if os.path.basename(root.rstrip("/")) != "cifar10":
    raise ValueError(f"config.data.root={root!r} must end in 'cifar10' (the archive's top folder).")
  pathlib.Path(root, ".complete").touch()
  return root


def prepare(config):
  """Makes `config`'s folder source and its statistics ready. No-op for other sources."""
  if config.data.source != "folder":
    return
  ensure_extracted(config.data.root)
  from alexnet_jax.data import stats  # Imports TensorFlow: only when there is work.
  path = stats.stats_path(config)
  if config.data.mean != "none" or config.data.pca_noise_std > 0:
    if not os.path.exists(path):
      stats.save_stats(stats.compute_stats(config), path)


def main():
  config = cifar10_fig1.get_config()
  prepare(config)
  print(config.data.root)


if __name__ == "__main__":
  main()
