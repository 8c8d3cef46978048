"""alexnet_jax/configs: loadable by path from the repository root (the top-level `configs`
link) as by import, importing only ml_collections and each other."""
import ast
import importlib
import pathlib
import re
import subprocess
import sys

import ml_collections
import pytest
from absl import flags
from ml_collections import config_flags

from alexnet_jax.configs import paper


ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "alexnet_jax" / "configs").glob("*.py"))
NAMES = [p.stem for p in CONFIGS if "def get_config" in p.read_text()]


def test_configs_import_only_ml_collections_os_and_other_configs():
  for path in CONFIGS:
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, ast.Import):
        modules = [a.name for a in node.names]
      elif isinstance(node, ast.ImportFrom):
        modules = [node.module]
      else:
        continue
      assert all(m in ("ml_collections", "os", "alexnet_jax.configs") for m in modules), (
          f"{path.name} imports {modules}")


def test_loading_a_config_loads_neither_jax_nor_tensorflow():
  code = ("import sys\nfrom alexnet_jax.configs import cifar10_lrn, demo\n"
          "cifar10_lrn.get_config(), demo.get_config()\n"
          "print(sorted({m.split('.')[0] for m in sys.modules} & {'jax', 'tensorflow', "
          "'experiments'}))")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
  assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("name", NAMES)
def test_the_top_level_path_loads_the_packages_config(name):
  """--config=configs/<name>.py (what the README and make demo pass) is the package's file."""
  path = ROOT / "configs" / f"{name}.py"
  assert path.resolve() == ROOT / "alexnet_jax" / "configs" / f"{name}.py"
  values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", str(path), flag_values=values, sys_argv=["test"])
  values(["test"])
  module = importlib.import_module(f"alexnet_jax.configs.{name}")
  assert values.config.to_dict() == module.get_config().to_dict()



DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# `config.x.y` or `--config.x.y`; not `tiny_config.py` or `self.config.x`.
MENTION = re.compile(r"(?<![\w./])(?:--)?config((?:\.[A-Za-z_]\w*)+)")
NOT_FIELDS = ("x", "json")  # `--config.x=y`, the placeholder; `config.json`, the run's file.


def _exists(config, dotted):
  node = config
  for name in dotted.split("."):
    if not isinstance(node, ml_collections.ConfigDict) or name not in node:
      return False
    node = node[name]
  return True


def _ablation_switches():
  """The README's list: `config.model` (`activation`, `layer_weight_std.<layer>`, ...), each
  section with its fields in brackets, or a field alone (`config.eval.ten_crop`, or with words
  in brackets)."""
  text = (ROOT / "README.md").read_text()
  paragraph = text.split("Ablation switches live in", 1)[1].split("\n\n", 1)[0]
  switches = []
  for section, inside in re.findall(r"`config\.([\w.]+)`(?:\s*\(([^()]*)\))?", paragraph):
    names = re.findall(r"`([\w.]+?)(?:\.<\w+>)?`", inside)
    switches += [f"{section}.{name}" for name in names] if names else [section]
  return switches


def test_the_config_fields_the_readme_and_docs_name_exist():
  """A renamed or removed field leaves no mention behind (the README once listed `lrn`, gone
  since `model.norm`)."""
  config = paper.get_config()
  switches = _ablation_switches()
  missing = [f"README.md's ablation list: {name}" for name in switches
             if not _exists(config, name)]
  missing += [f"README.md's ablation list lacks {name}" for name in
              ("model.norm", "mesh.model", "mesh.layout", "eval.ten_crop") if name not in switches]
  for path in DOCS:
    for number, line in enumerate(path.read_text().splitlines(), 1):
      for dotted in MENTION.findall(line):
        dotted = dotted[1:]
        if dotted.split(".")[0] not in NOT_FIELDS and not _exists(config, dotted):
          missing.append(f"{path.relative_to(ROOT)}:{number}: config.{dotted}")
  assert not missing, "\n".join(missing)
