"""tools/caffe.py against OpenCV's dnn module, an implementation of Caffe's layers no one here
wrote: the same prototxt and caffemodel (random weights, both message formats), the same
photographs, the same logits. And each of the conversion's silent steps (BGR, the C,H,W
flattening before fc6, Caffe's LRN over both towers with alpha / n), done wrong, breaks it."""
import functools
import json
import os
import pathlib
import shutil
import tempfile

import jax
import ml_collections
import numpy as np
import pytest

from alexnet_jax import parallel
from alexnet_jax import steps
from alexnet_jax.configs import paper
from alexnet_jax.tools import caffe
from alexnet_jax.tools import caffe_proto
from alexnet_jax.tools import common
from tests import caffe_files

cv2 = pytest.importorskip("cv2", reason="opencv-python-headless (the test extra) is needed")
SAMPLES = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "imagenet_samples"
# Eight photographs, a greyscale one among them (decoded to 3 channels alike by both sides).
PHOTOS = ("n01440764_tench", "n01530575_brambling", "n01641577_bullfrog",
          "n02096051_Airedale", "n02815834_beaker", "n03417042_garbage_truck",
          "n04037443_racer", "n07747607_orange")
WIDTH, CLASSES = 0.25, 20
RTOL = 1e-4  # Of the largest logit.


def photo_paths():
  if not SAMPLES.is_dir():
    pytest.skip(f"No sample photographs at {SAMPLES} (../shared/data/imagenet_samples).")
  found = {p.stem: str(p) for p in SAMPLES.glob("*.JPEG")}
  return [found[name] for name in PHOTOS if name in found]


@pytest.fixture(scope="module", autouse=True)
def _remove_the_files():
  """The files (240 MB at full width) live in one folder, removed after this module."""
  yield
  for fn in (caffe_dir, imported):
    fn.cache_clear()
  shutil.rmtree(_FOLDER, ignore_errors=True)


_FOLDER = pathlib.Path(tempfile.gettempdir()) / f"alexnet_jax_caffe_{os.getpid()}"


@functools.cache
def caffe_dir(v1, width=WIDTH, classes=CLASSES):
  """The files of one format; both hold the same random weights and mean (seed 0)."""
  folder = _FOLDER / f"{'layers' if v1 else 'layer'}_{width}_{classes}"
  folder.mkdir(parents=True)
  return caffe_files.write(folder, width=width, num_classes=classes, v1=v1)


@functools.cache
def decoded():
  """uint8 [n, 256, 256, 3] RGB: the photographs as this package decodes them for evaluation."""
  paths = photo_paths()
  return next(common.image_batches(paper.get_config(), common.files_split(paths),
                                   batch_size=len(paths)))["image"]


def opencv_logits(v1, *files):
  """fc8 of OpenCV's run of the Caffe files on the centre 227 crops, BGR, minus the mean."""
  paths, _, mean_bgr = caffe_dir(v1, *files)
  net = cv2.dnn.readNetFromCaffe(str(paths["prototxt"]), str(paths["caffemodel"]))
  x_NCHW = decoded()[..., ::-1].transpose(0, 3, 1, 2).astype(np.float32) - mean_bgr[None]
  off = (256 - 227) // 2
  net.setInput(np.ascontiguousarray(x_NCHW[:, :, off:off + 227, off:off + 227]))
  return net.forward("fc8")


@functools.cache
def eval_step(config_json):
  config = ml_collections.ConfigDict(json.loads(config_json))
  mesh = parallel.make_mesh(config)
  return steps.make_eval_step(config, mesh), mesh


def our_logits(config, params, mean):
  """The evaluation step's centre-crop logits, on a mesh of one tower per device."""
  config.mesh.model = 2
  step, mesh = eval_step(config.to_json())
  params = jax.device_put(params, parallel.param_shardings(mesh, params))
  consts = parallel.place_replicated(mesh, {"mean": mean, "pca": np.zeros((3, 3), np.float32)})
  return np.asarray(step(params, parallel.to_global(mesh, decoded()), consts, False))


@functools.cache
def imported(v1, *files):
  paths, _, _ = caffe_dir(v1, *files)
  return caffe.read(str(paths["prototxt"]), str(paths["caffemodel"]), str(paths["mean"]))


def relative(a, b):
  return float(np.abs(a - b).max() / np.abs(b).max())


def top5(logits):
  return np.argsort(-logits, axis=-1, kind="stable")[:, :5]


def test_both_formats_read_alike_into_the_projects_layout():
  (config, params, mean), (config1, params1, mean1) = imported(False), imported(True)
  assert config.to_dict() == config1.to_dict()
  m = config.model
  assert (m.width, m.num_classes, m.image_size, m.lrn_convention, m.lrn_k, m.lrn_across_towers,
          m.dropout_scaling, m.lrn_alpha, m.lrn_n) == (
              WIDTH, CLASSES, 227, "caffe", 1.0, True, "inverted", pytest.approx(1e-4), 5)
  for layer in params:
    for leaf in ("kernel", "bias"):
      np.testing.assert_array_equal(params[layer][leaf], params1[layer][leaf])
  np.testing.assert_array_equal(mean, mean1)
  _, blobs, mean_bgr = caffe_dir(False)
  np.testing.assert_array_equal(mean, mean_bgr[::-1].transpose(1, 2, 0))   # BGR C,H,W -> RGB.
  # conv1, output 13 (tower 1's second), input R: Caffe's channel 2 (R of B, G, R).
  np.testing.assert_array_equal(params["conv1"]["kernel"][1, :, :, 0, 1],
                                blobs["conv1"][0][13, 2])
  # fc8's halves: tower 1 holds classes 10-19.
  np.testing.assert_array_equal(params["fc8"]["bias"][1], blobs["fc8"][1][10:])


@pytest.mark.parametrize("v1", [False, True], ids=["layer", "layers_v1"])
def test_logits_equal_opencvs(v1):
  config, params, mean = imported(v1)
  ours, theirs = our_logits(config, params, mean), opencv_logits(v1)
  assert ours.shape == theirs.shape == (len(photo_paths()), CLASSES)
  # The signal reaches fc8: the logits vary with the photograph, well beyond the tolerance.
  assert np.abs(theirs - theirs.mean(axis=0)).max() > 0.1 * np.abs(theirs).max()
  assert len({tuple(row) for row in top5(theirs)}) > 1
  print(f"largest logit difference against OpenCV ({'layers' if v1 else 'layer'}): "
        f"{np.abs(ours - theirs).max():.3g} of {np.abs(theirs).max():.3g} "
        f"({relative(ours, theirs):.2g} relative)")
  assert relative(ours, theirs) < RTOL
  np.testing.assert_array_equal(top5(ours), top5(theirs))
  probs = lambda z: np.exp(z - z.max(-1, keepdims=True)) / np.exp(
      z - z.max(-1, keepdims=True)).sum(-1, keepdims=True)
  np.testing.assert_allclose(probs(ours), probs(theirs), rtol=0, atol=RTOL)


def wrong(step):
  """The import's config, params and mean with one step done wrong."""
  config, params, mean = imported(False)
  config, params = config.copy_and_resolve_references(), dict(params)
  if step == "rgb_for_bgr":
    params["conv1"] = dict(params["conv1"], kernel=params["conv1"]["kernel"][..., ::-1, :])
  elif step == "hwc_for_chw":  # fc6's rows left in Caffe's C,H,W order.
    k = params["fc6"]["kernel"]
    towers, rows, out = k.shape
    c = rows // 36
    params["fc6"] = dict(params["fc6"], kernel=k.reshape(towers, 6, 6, c, out).transpose(
        0, 3, 1, 2, 4).reshape(k.shape))
  elif step == "lrn_per_tower":
    config.model.lrn_across_towers = False
  elif step == "lrn_paper_alpha":
    config.model.lrn_convention = "paper"
  return config, params, mean


@pytest.mark.parametrize("step", ["rgb_for_bgr", "hwc_for_chw", "lrn_per_tower",
                                  "lrn_paper_alpha"])
def test_one_wrong_step_breaks_the_agreement(step):
  off = relative(our_logits(*wrong(step)), opencv_logits(False))
  print(f"{step}: {off:.3g} of the largest logit")
  assert off > 100 * RTOL


def test_refuses_caffenet_and_other_geometries():
  net = caffe_files.deploy_net(WIDTH, CLASSES)
  names = [m.name for m in net.layer]
  swapped = caffe_proto.NetParameter()
  swapped.CopyFrom(net)
  del swapped.layer[:]
  order = list(net.layer)
  i, j = names.index("norm1"), names.index("pool1")
  order[i], order[j] = order[j], order[i]   # CaffeNet pools before it normalises.
  swapped.layer.extend(order)
  with pytest.raises(ValueError, match="CaffeNet"):
    caffe.model_config(swapped)
  net.layer[names.index("conv2")].convolution_param.group = 1
  with pytest.raises(ValueError, match="conv2"):
    caffe.model_config(net)
  # 224 inputs: Caffe's conv1 gives 54x54 where this network's gives 55.
  with pytest.raises(ValueError, match="use 227"):
    caffe.model_config(caffe_files.deploy_net(WIDTH, CLASSES, size=224))


@pytest.mark.slow
def test_the_weights_file_and_the_run_predict_as_opencv(tmp_path):
  """The command's outputs: the .npz fine-tuning starts from, and a run at step 0 that predict
  reads (its config, mean and class names from the workdir) giving OpenCV's logits."""
  from alexnet_jax.checkpoints import trained_run
  from alexnet_jax.checkpoints import weights_file
  from alexnet_jax.tools import predict
  config, params, mean = imported(True)
  names = [f"n{k:08d} thing {k}" for k in range(CLASSES)]
  synsets = tmp_path / "synset_words.txt"
  synsets.write_text("".join(f"{n}\n" for n in names))
  names = caffe.read_synsets(str(synsets), CLASSES)
  assert names[3] == "thing 3"
  loaded, meta = weights_file.load(weights_file.save(tmp_path / "w.npz", params, config=config,
                                             class_names=names, step=0, mean=mean))
  assert meta["model"]["lrn_across_towers"] and meta["class_names"] == names
  np.testing.assert_array_equal(loaded["fc6"]["kernel"], params["fc6"]["kernel"])
  config = config.copy_and_resolve_references()
  config.mesh.model = 2
  weights_file.write_run(tmp_path / "run", config, params, names, mean)
  config, restored, step = trained_run.load_run(tmp_path / "run")
  assert step == 0 and trained_run.class_names(tmp_path / "run", config) == names
  mesh = parallel.make_mesh(config)
  consts = parallel.place_replicated(mesh, trained_run.constants(tmp_path / "run", config))
  got = predict.logits(config, restored, mesh, consts, photo_paths(), batch_size=8)
  assert relative(got, opencv_logits(True)) < RTOL


@pytest.mark.slow
def test_full_width_bvlc_alexnet_shapes_equal_opencv():
  """bvlc_alexnet's own sizes (96-384 channels, 6x6x256 into fc6, 4096 units, 1000 classes) in
  the 2014 format, one tower per device."""
  config, params, mean = imported(True, 1.0, 1000)
  assert params["fc6"]["kernel"].shape == (2, 9216, 2048)
  assert params["fc8"]["kernel"].shape == (2, 4096, 500)
  ours, theirs = our_logits(config, params, mean), opencv_logits(True, 1.0, 1000)
  print(f"full width: largest logit difference {np.abs(ours - theirs).max():.3g} of "
        f"{np.abs(theirs).max():.3g} ({relative(ours, theirs):.2g} relative)")
  assert np.abs(theirs - theirs.mean(axis=0)).max() > 0.1 * np.abs(theirs).max()
  assert relative(ours, theirs) < RTOL
  np.testing.assert_array_equal(top5(ours), top5(theirs))


@pytest.mark.slow
def test_the_readmes_caffe_commands_run_as_written(tmp_path):
  """The README's import and predict commands on 2014-format files (paths replaced), the
  prediction being OpenCV's top class."""
  import re
  import shlex
  import subprocess
  import sys
  root = pathlib.Path(__file__).resolve().parents[1]
  section = (root / "README.md").read_text().split("### Caffe's trained AlexNet", 1)[1]
  block = re.findall(r"```bash\n(.*?)```", section, re.S)[0].replace("\\\n", " ")
  commands = [line.strip() for line in block.splitlines() if line.strip()]
  assert "alexnet_jax.tools.caffe" in commands[0] and "tools.predict" in commands[1]
  paths, _, _ = caffe_dir(True)
  photo = photo_paths()[0]
  names = [f"n{k:08d} class{k}" for k in range(CLASSES)]
  (tmp_path / "synset_words.txt").write_text("".join(f"{n}\n" for n in names))
  swap = {"deploy.prototxt": paths["prototxt"], "bvlc_alexnet.caffemodel": paths["caffemodel"],
          "ilsvrc_2012_mean.binaryproto": paths["mean"], "photo.jpg": photo}
  def replaced(arg):  # --flag=FILE or FILE, the README's file names swapped for the tests'.
    head, eq, value = arg.rpartition("=")
    return head + eq + str(swap.get(value, value))

  outputs = []
  for command in commands[:2]:
    argv = [replaced(a) for a in shlex.split(command)]
    assert argv[0] == ".venv/bin/python"
    out = subprocess.run([sys.executable, *argv[1:]], cwd=tmp_path, capture_output=True,
                         text=True, timeout=900, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert out.returncode == 0, f"{command}\n{out.stdout}\n{out.stderr[-3000:]}"
    outputs.append(out.stdout)
  best = int(np.argmax(opencv_logits(True)[PHOTOS.index(pathlib.Path(photo).stem)]))
  assert f"1. class{best} " in outputs[1], outputs[1]
