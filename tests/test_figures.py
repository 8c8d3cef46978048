"""figures.py on the shared tiny run: figure 3's PNG read back cell by cell against conv1's
kernels; figure 4 finds a training image used as the query first, at distance 0; figure 3 of
the committed Tiny ImageNet weights file alone is the one its run drew."""
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

from alexnet_jax import parallel
from alexnet_jax.checkpoints import trained_run
from alexnet_jax.data import sources
from alexnet_jax.tools import common
from alexnet_jax.tools import figures

ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results" / "tiny_imagenet_w01875"


def test_figure3_draws_each_kernel_scaled_to_its_range_tower_0_on_top(loaded, tmp_path):
  config, params, _, _, _ = loaded
  kernel = np.asarray(jax.device_get(params["conv1"]["kernel"]), np.float64)
  assert kernel.shape == (2, 11, 11, 3, 6)  # Width 1/8: 6 of the paper's 48 per tower.
  png = figures.write_fig3(tmp_path / "fig3.png", params)
  image = np.asarray(Image.open(png).convert("RGB"))
  scale, gap = figures.FIG3_SCALE, figures.GAP
  cell = 11 * scale
  # One row of 6 per tower, the towers 2 gaps apart.
  assert image.shape == (2 * cell + 2 * gap, 6 * cell + 5 * gap, 3)
  for tower in range(2):
    for i in range(6):
      y, x = tower * (cell + 2 * gap), i * (cell + gap)
      k = kernel[tower, :, :, :, i]
      expected = np.round(255 * (k - k.min()) / (k.max() - k.min()))
      shown = image[y:y + cell:scale, x:x + cell:scale].astype(np.float64)
      assert np.abs(shown - expected).max() <= 1, (tower, i)
      assert (image[y:y + cell, x:x + cell].reshape(11, scale, 11, scale, 3)
              == shown[:, None, :, None].astype(np.uint8)).all()  # Whole 4x4 blocks.
  assert (image[cell:cell + 2 * gap] == figures.BACKGROUND).all()  # Between the towers.


def test_figure3_lays_out_the_papers_96_kernels_in_6_rows_of_16():
  height, width, origin = figures.fig3_layout(48, scale=1)
  assert (height, width) == (6 * 11 + 4 * figures.GAP + 2 * figures.GAP, 16 * 11 + 15 * 2)
  assert origin(0, 47)[0] < origin(1, 0)[0] and origin(1, 16) == (origin(1, 0)[0] + 13, 0)


def test_figure4_finds_a_training_image_first_at_distance_zero(loaded, tmp_path):
  config, params, _, mesh, consts = loaded
  train_split = sources.open_split(config, "train")
  picks = [3, 42]
  png, rows = figures.write_fig4(tmp_path, config, params, mesh, consts,
                                 files=[train_split.paths[i] for i in picks], k=4)
  for pick, row in zip(picks, rows):
    first = row["neighbours"][0]
    assert first["index"] == pick and first["file"] == train_split.paths[pick]
    assert first["distance"] == 0.0
    distances = [n["distance"] for n in row["neighbours"]]
    assert distances == sorted(distances) and distances[1] > 0
  image = np.asarray(Image.open(png))
  assert image.shape[:2] == (2 * (96 + 14) + 2 * figures.GAP, 5 * 96 + 4 * 2 * figures.GAP
                             + 6 * figures.GAP)


def test_nearest_neighbours_agree_with_a_brute_force_search(loaded):
  config, params, _, mesh, consts = loaded
  from alexnet_jax.tools import features  # pylint: disable=g-import-not-at-top
  split = sources.open_split(config, "train")
  batches = list(common.image_batches(config, split, batch_size=8))
  extract = features.make_extract(config, mesh, ["fc7"])
  fc7 = np.concatenate([np.asarray(extract(params, parallel.to_global(mesh, b["image"]),
                                           consts)["fc7"]) for b in batches])
  queries = np.stack([batches[0]["image"][5], batches[4]["image"][2]])
  d, idx, images = figures.nearest_training_images(config, params, mesh, consts, queries, k=3)
  for q, qi in enumerate([5, 4 * 8 + 2]):
    brute = np.sqrt(((fc7 - fc7[qi]) ** 2).sum(axis=1))
    np.testing.assert_array_equal(idx[q], np.argsort(brute, kind="stable")[:3])
    np.testing.assert_allclose(d[q], np.sort(brute)[:3], rtol=1e-5, atol=1e-6)
    all_images = np.concatenate([b["image"] for b in batches])
    np.testing.assert_array_equal(images[q], all_images[idx[q]])


def test_figure3_of_the_committed_tiny_imagenet_weights_is_the_one_its_run_drew(tmp_path):
  """The weights file alone gives experiments/results/tiny_imagenet_w01875/fig3.png, which
  was drawn from the run's workdir, pixel for pixel."""
  _, params, _ = trained_run.load_run(RESULTS / "weights.npz")
  png = figures.write_fig3(tmp_path / "fig3.png", params)
  np.testing.assert_array_equal(np.asarray(Image.open(png)),
                                np.asarray(Image.open(RESULTS / "fig3.png")))


@pytest.mark.slow
def test_the_command_draws_figure3_from_a_weights_file(tmp_path):
  done = subprocess.run(
      [sys.executable, "-m", "alexnet_jax.tools.figures", f"--weights={RESULTS / 'weights.npz'}",
       "--figures=fig3", f"--out={tmp_path}"], cwd=ROOT, capture_output=True, text=True,
      timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  assert "Figure 3 (conv1 of step 3900)" in done.stdout
  np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "fig3.png")),
                                np.asarray(Image.open(RESULTS / "fig3.png")))
