"""alexnet_jax/configs: loadable by path from the repository root (the top-level `configs`
link) as by import, importing only ml_collections and each other."""
import ast
import importlib
import pathlib
import subprocess
import sys

import pytest
from absl import flags
from ml_collections import config_flags


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

