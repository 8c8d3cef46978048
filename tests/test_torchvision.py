"""tools/torchvision.py against torch itself: torchvision's AlexNet with seeded random weights,
saved as torchvision saves its weights, imported, gives torch's logits on the same photographs
(within 1e-4 of the largest, the same top 5), and each of the conversion's silent steps done
wrong (no transpose, C,H,W flattening before fc6, BGR, the std left out of the input scale)
breaks that. Then the whole path, photo files to prediction, against torchvision's transforms,
and the imported run evaluated by eval_only."""
import functools
import json
import pathlib

import jax
import ml_collections
import numpy as np
import pytest
from PIL import Image

from alexnet_jax import errors
from alexnet_jax import parallel
from alexnet_jax import steps
from alexnet_jax.checkpoints import trained_run
from alexnet_jax.checkpoints import weights_file
from alexnet_jax.configs import paper
from alexnet_jax.tools import common
from alexnet_jax.tools import predict
from alexnet_jax.tools import torchvision as tv_import

torch = pytest.importorskip("torch", reason="torch (the test extra) is needed")
SAMPLES = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "imagenet_samples"
# Eight photographs, a greyscale one among them, of several shapes.
PHOTOS = ("n01440764_tench", "n01530575_brambling", "n01641577_bullfrog",
          "n02096051_Airedale", "n02815834_beaker", "n03417042_garbage_truck",
          "n04509417_unicycle", "n07747607_orange")
RTOL = 1e-4  # Of the largest logit.


def photo_paths():
  if not SAMPLES.is_dir():
    pytest.skip(f"No sample photographs at {SAMPLES} (../shared/data/imagenet_samples).")
  found = {p.stem: str(p) for p in SAMPLES.glob("*.JPEG")}
  return [found[name] for name in PHOTOS if name in found]


class AlexNet(torch.nn.Module):
  """torchvision.models.AlexNet (torchvision 0.28), for where torchvision is not installed:
  torchvision's wheels on PyPI are built against CUDA torch and do not import beside the CPU
  build the test extra installs. The same modules, names and forward."""

  def __init__(self, num_classes=1000, dropout=0.5):
    super().__init__()
    nn = torch.nn
    self.features = nn.Sequential(
        nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2), nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(64, 192, kernel_size=5, padding=2), nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(192, 384, kernel_size=3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(384, 256, kernel_size=3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(256, 256, kernel_size=3, padding=1), nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2))
    self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
    self.classifier = nn.Sequential(
        nn.Dropout(p=dropout), nn.Linear(256 * 6 * 6, 4096), nn.ReLU(inplace=True),
        nn.Dropout(p=dropout), nn.Linear(4096, 4096), nn.ReLU(inplace=True),
        nn.Linear(4096, num_classes))

  def forward(self, x):
    x = self.avgpool(self.features(x))
    return self.classifier(torch.flatten(x, 1))


def torch_alexnet(num_classes=1000, seed=0):
  """torchvision.models.alexnet(weights=None) where torchvision imports, else the copy above;
  torchvision's own initialisation from a fixed seed, in evaluation mode."""
  torch.manual_seed(seed)
  try:
    import torchvision  # pylint: disable=g-import-not-at-top
    model = torchvision.models.alexnet(weights=None, num_classes=num_classes)
  except ImportError:
    model = AlexNet(num_classes)
  return model.eval()


_FILES = {}


@pytest.fixture(scope="module", autouse=True)
def _saved(tmp_path_factory):
  """The state_dicts, saved once per module as torchvision's .pth files are (torch.save)."""
  _FILES["folder"] = tmp_path_factory.mktemp("torchvision")
  yield
  _FILES.clear()
  for fn in (model_and_file, imported, decoded, torch_logits):
    fn.cache_clear()


@functools.cache
def model_and_file(num_classes=1000):
  model = torch_alexnet(num_classes)
  path = _FILES["folder"] / f"alexnet_{num_classes}.pth"
  torch.save(model.state_dict(), path)
  return model, path


@functools.cache
def imported(num_classes=1000):
  return tv_import.read(model_and_file(num_classes)[1])


@functools.cache
def decoded():
  """uint8 [n, 256, 256, 3]: the photographs as this package decodes them for evaluation."""
  paths = photo_paths()
  return next(common.image_batches(paper.get_config(), common.files_split(paths),
                                   batch_size=len(paths)))["image"]


def normalised_crops(images):
  """float32 N,C,H,W: the centre 224 crops, as torchvision's ToTensor and Normalize make them."""
  off = (256 - 224) // 2
  x = images[:, off:off + 224, off:off + 224].astype(np.float32) / 255.0
  x = (x - tv_import.MEAN) / tv_import.STD
  return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


@functools.cache
def torch_logits(num_classes=1000):
  with torch.no_grad():
    return model_and_file(num_classes)[0](torch.from_numpy(normalised_crops(decoded()))).numpy()


@functools.cache
def eval_step(config_json):
  config = ml_collections.ConfigDict(json.loads(config_json))
  mesh = parallel.make_mesh(config)
  return steps.make_eval_step(config, mesh), mesh


def our_logits(config, params, mean, images=None):
  """The evaluation step's centre-crop logits of the same decoded images (their mean
  subtracted on the device, config.model.input_scale inside the network)."""
  step, mesh = eval_step(config.to_json())
  params = jax.device_put(params, parallel.layout(config, mesh).param_shardings)
  consts = parallel.place_replicated(mesh, {"mean": mean, "pca": np.zeros((3, 3), np.float32)})
  images = decoded() if images is None else images
  return np.asarray(step(params, parallel.to_global(mesh, images), consts, False))


def relative(a, b):
  return float(np.abs(a - b).max() / np.abs(b).max())


def top5(logits):
  return np.argsort(-logits, axis=-1, kind="stable")[:, :5]


def test_the_import_lays_torchs_tensors_out_as_this_network_holds_them():
  model, _ = model_and_file()
  config, params, mean = imported()
  state = {k: v.numpy() for k, v in model.state_dict().items()}
  assert config.model.name == "owt" and config.model.num_classes == 1000
  assert params["conv1"]["kernel"].shape == (1, 11, 11, 3, 64)
  assert params["fc6"]["kernel"].shape == (1, 9216, 4096)
  assert params["fc8"]["kernel"].shape == (1, 4096, 1000)
  # conv2, output 5, input 7, row 1, column 3: O,I,H,W -> H,W,I,O.
  assert params["conv2"]["kernel"][0, 1, 3, 7, 5] == state["features.3.weight"][5, 7, 1, 3]
  # conv1's R (0.226 / 0.229) and B (0.226 / 0.225) inputs.
  np.testing.assert_allclose(params["conv1"]["kernel"][0, 2, 4, 0, 9],
                             state["features.0.weight"][9, 0, 2, 4] * 0.226 / 0.229, rtol=1e-6)
  # fc6's input (y=1, x=2, c=5) is torch's flattened C,H,W column 5 * 36 + 1 * 6 + 2.
  assert (params["fc6"]["kernel"][0, (1 * 6 + 2) * 256 + 5, 11]
          == state["classifier.1.weight"][11, 5 * 36 + 1 * 6 + 2])
  np.testing.assert_array_equal(params["fc8"]["bias"][0], state["classifier.6.bias"])
  np.testing.assert_allclose(mean[100, 30], 255 * tv_import.MEAN, rtol=1e-6)


def test_logits_equal_torchs():
  config, params, mean = imported()
  ours, theirs = our_logits(config, params, mean), torch_logits()
  assert ours.shape == theirs.shape == (len(photo_paths()), 1000)
  # The signal reaches fc8: the logits vary with the photograph, well beyond the tolerance.
  assert np.abs(theirs - theirs.mean(axis=0)).max() > 0.1 * np.abs(theirs).max()
  assert len({tuple(row) for row in top5(theirs)}) > 1
  print(f"largest logit difference against torch: {np.abs(ours - theirs).max():.3g} of "
        f"{np.abs(theirs).max():.3g} ({relative(ours, theirs):.2g} relative)")
  assert relative(ours, theirs) <= RTOL
  np.testing.assert_array_equal(top5(ours), top5(theirs))


def wrong(step):
  """The import's config, params and mean with one step done wrong."""
  config, params, mean = imported()
  config, params = config.copy_and_resolve_references(), dict(params)
  state = {k: v.numpy() for k, v in model_and_file()[0].state_dict().items()}
  if step == "no_transpose":  # O,I,H,W read as if it were H,W,I,O.
    for layer, (module, _) in tv_import.LAYERS.items():
      if layer.startswith("conv") and layer != "conv1":
        w = state[module + ".weight"]
        params[layer] = dict(params[layer], kernel=w.reshape(params[layer]["kernel"].shape))
  elif step == "chw_flatten":  # fc6's rows left in torch's C,H,W order.
    params["fc6"] = dict(params["fc6"], kernel=state["classifier.1.weight"].T[None])
  elif step == "bgr":
    params["conv1"] = dict(params["conv1"], kernel=params["conv1"]["kernel"][..., ::-1, :])
  elif step == "scale_without_std":  # x / 255 - mean: torchvision's std left out.
    config.model.input_scale = 1.0 / 255.0
  return config, params, mean


@pytest.mark.parametrize("step", ["no_transpose", "chw_flatten", "bgr", "scale_without_std"])
def test_one_wrong_step_breaks_the_agreement(step):
  off = relative(our_logits(*wrong(step)), torch_logits())
  print(f"{step}: {off:.3g} of the largest logit")
  assert off > 100 * RTOL


def test_refuses_what_is_not_alexnets_state_dict_naming_the_tensor(tmp_path):
  state = model_and_file()[0].state_dict()
  torch.save({k: v for k, v in state.items() if k != "features.8.weight"}, tmp_path / "a.pth")
  with pytest.raises(errors.ConfigError, match=r"no tensor 'features.8.weight' \(of shape "
                                               r"\[256, 384, 3, 3\]\)"):
    tv_import.read(tmp_path / "a.pth")
  torch.save({**state, "classifier.4.bias": torch.zeros(10)}, tmp_path / "b.pth")
  with pytest.raises(errors.ConfigError,
                     match=r"'classifier.4.bias' has shape \[10\], not \[4096\]"):
    tv_import.read(tmp_path / "b.pth")
  torch.save(torch.nn.Linear(2, 2), tmp_path / "module.pth")  # A pickled module, not tensors.
  with pytest.raises(errors.ConfigError, match="not a state_dict torch.load"):
    tv_import.read(tmp_path / "module.pth")


def torchvision_transform(path):
  """float32 C,H,W: torchvision's ImageClassification(crop_size=224) preprocessing of a photo
  file, torchvision.transforms itself where it imports, else the same PIL calls: the shorter
  side resized to 256 (PIL's bilinear, antialiased), the centre 224 crop (offsets rounded),
  /255, the mean and std."""
  image = Image.open(path).convert("RGB")
  try:
    from torchvision import transforms  # pylint: disable=g-import-not-at-top
  except ImportError:
    w, h = image.size
    size = (256, int(256 * h / w)) if w <= h else (int(256 * w / h), 256)
    image = image.resize(size, Image.BILINEAR)
    left, top = int(round((size[0] - 224) / 2.0)), int(round((size[1] - 224) / 2.0))
    x = np.asarray(image.crop((left, top, left + 224, top + 224)), np.float32) / 255.0
    return ((x - tv_import.MEAN) / tv_import.STD).transpose(2, 0, 1)
  return transforms.Compose([
      transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor(),
      transforms.Normalize(tv_import.MEAN.tolist(), tv_import.STD.tolist())])(image).numpy()


@pytest.mark.slow
def test_predict_on_photo_files_agrees_with_torchvisions_preprocessing(tmp_path):
  """The whole path: the import's file and workdir, predict reading photo files (decoded,
  resized and cropped as here) against torch on torchvision's preprocessing of the same files.
  The decoders and resizes differ a little (a large JPEG decoded at a smaller scale, the
  square cut before the resize): 3% of the largest logit here, where BGR alone moves them by
  21% and the other wrong steps by more."""
  config, params, mean = imported()
  npz = weights_file.write_import(tmp_path / "owt.npz", tmp_path / "run", config, params,
                                  [f"class {k}" for k in range(1000)], mean)
  with torch.no_grad():
    theirs = model_and_file()[0](torch.from_numpy(np.stack(
        [torchvision_transform(p) for p in photo_paths()]))).numpy()
  for source in (npz, tmp_path / "run"):
    config, params, step = trained_run.load_run(source)
    mesh = parallel.make_mesh(config)
    consts = parallel.place_replicated(mesh, trained_run.constants(source, config))
    ours = predict.logits(config, params, mesh, consts, photo_paths(), batch_size=8)
    assert step == 0
    print(f"{source}: {relative(ours, theirs):.3g} of the largest logit from torchvision's")
    assert relative(ours, theirs) < 0.06
  config, params, _ = wrong("bgr")
  params = jax.device_put(params, parallel.layout(config, mesh).param_shardings)
  assert relative(predict.logits(config, params, mesh, consts, photo_paths(), batch_size=8),
                  theirs) > 0.15


@pytest.mark.slow
def test_eval_only_of_the_imported_run_gives_torchs_errors(tmp_path):
  """torchvision's network at 10 classes, imported with --workdir; eval_only with
  --config.init_from=the file, in that workdir, on 10 photographs (one a class): the same
  top-1 and top-5 errors as torch's logits of the same crops."""
  from tests import program  # pylint: disable=g-import-not-at-top
  from tests import tiny_config  # pylint: disable=g-import-not-at-top
  photo_paths()  # Skips without the photographs.
  paths = sorted(SAMPLES.glob("*.JPEG"))[:10]
  for split in ("train", "val"):
    for path in map(pathlib.Path, paths):
      (tmp_path / "photos" / split / path.stem).mkdir(parents=True)
      (tmp_path / "photos" / split / path.stem / path.name).symlink_to(path)
  config, params, mean = imported(10)
  npz = weights_file.write_import(tmp_path / "owt10.npz", tmp_path / "run", config, params,
                                  [pathlib.Path(p).stem for p in paths], mean)
  images = next(common.image_batches(paper.get_config(), common.files_split(paths),
                                     batch_size=len(paths)))["image"]
  with torch.no_grad():
    logits = model_and_file(10)[0](torch.from_numpy(normalised_crops(images))).numpy()
  ranks = np.argsort(-logits, axis=-1, kind="stable")
  labels = np.arange(10)  # One photograph a class, the classes in sorted order.
  top1, top5 = (float(np.mean([label not in row[:k] for label, row in zip(labels, ranks)]))
                for k in (1, 5))

  config = tiny_config.get_config()
  config.data.update(source="folder", root=str(tmp_path / "photos"), eval_split="val")
  config.update(eval_only=True, init_from=str(npz))
  result = program.run(tmp_path / "run", config=config)
  assert result.status == 0, result.stderr[-3000:]
  line = next(x for x in result.stdout.splitlines() if x.startswith("Checkpoint step 0,"))
  assert f"top-1 error {top1:.4f} centre crop" in line and f"top-5 {top5:.4f} /" in line, line


def test_figure3_and_features_read_the_2014_network(tmp_path):
  from alexnet_jax.tools import features  # pylint: disable=g-import-not-at-top
  from alexnet_jax.tools import figures  # pylint: disable=g-import-not-at-top
  config, params, _ = imported()
  image = np.asarray(Image.open(figures.write_fig3(tmp_path / "fig3.png", params)))
  cell = 11 * figures.FIG3_SCALE
  assert image.shape == (4 * cell + 3 * figures.GAP, 16 * cell + 15 * figures.GAP, 3)  # 64.
  ranks = features.map_ranks(config.model)
  assert ranks["fc7"] == 2 and ranks["pool5"] == 4 and "norm1" not in ranks


@pytest.mark.slow
def test_the_readmes_torchvision_commands_run_as_written(tmp_path):
  """The README's import and predict commands (the file names swapped for the test's), the
  prediction being torch's top class."""
  import os  # pylint: disable=g-import-not-at-top
  import re  # pylint: disable=g-import-not-at-top
  import shlex  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  root = pathlib.Path(__file__).resolve().parents[1]
  section = (root / "README.md").read_text().split("### torchvision's AlexNet", 1)[1]
  block = re.findall(r"```bash\n(.*?)```", section, re.S)[0].replace("\\\n", " ")
  commands = [line.strip() for line in block.splitlines() if line.strip()]
  assert "tools.torchvision" in commands[0] and "tools.predict" in commands[1]
  names = [f"n{k:08d} class{k}" for k in range(1000)]
  (tmp_path / "synset_words.txt").write_text("".join(f"{n}\n" for n in names))
  swap = {"alexnet-owt-7be5be79.pth": str(model_and_file()[1]), "photo.jpg": photo_paths()[0]}

  def replaced(arg):  # --flag=FILE or FILE, the README's file names swapped for the test's.
    head, eq, value = arg.rpartition("=")
    return head + eq + swap.get(value, value)

  outputs = []
  for command in commands[:2]:
    argv = [replaced(a) for a in shlex.split(command)]
    assert argv[0] == ".venv/bin/python"
    out = subprocess.run([sys.executable, *argv[1:]], cwd=tmp_path, capture_output=True,
                         text=True, timeout=900, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert out.returncode == 0, f"{command}\n{out.stdout}\n{out.stderr[-3000:]}"
    outputs.append(out.stdout)
  assert f"1. class{int(np.argmax(torch_logits()[0]))} " in outputs[1], outputs[1]
