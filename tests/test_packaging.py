"""The install requirements resolve per platform: one TensorFlow for each platform that has a
2.21.0 wheel, and accelerator extras that pin the same jax as the base install."""
import configparser
import pathlib

import pytest
from packaging.requirements import Requirement

SETUP_CFG = pathlib.Path(__file__).resolve().parents[1] / "setup.cfg"
PLATFORMS = {  # packaging's marker environment for each platform, as pip evaluates it.
    "linux x86_64": dict(sys_platform="linux", platform_machine="x86_64"),
    "linux aarch64 (GH200)": dict(sys_platform="linux", platform_machine="aarch64"),
    "macOS arm64": dict(sys_platform="darwin", platform_machine="arm64"),
    "Windows": dict(sys_platform="win32", platform_machine="AMD64"),
}


def requirements(section, key):
  cfg = configparser.ConfigParser()
  cfg.read(SETUP_CFG)
  lines = [line.split("#")[0].strip() for line in cfg[section][key].splitlines()]
  return [Requirement(line) for line in lines if line]


@pytest.mark.parametrize("platform", sorted(PLATFORMS))
def test_each_platform_gets_exactly_one_tensorflow(platform):
  env = {"python_version": "3.11", "python_full_version": "3.11.7", **PLATFORMS[platform]}
  chosen = [r for r in requirements("options", "install_requires")
            if r.name.startswith("tensorflow") and r.name != "tensorflow-datasets"
            and (r.marker is None or r.marker.evaluate(env))]
  expected = "tensorflow-cpu" if platform in ("linux x86_64", "Windows") else "tensorflow"
  assert [r.name for r in chosen] == [expected], platform
  assert str(chosen[0].specifier) == "==2.21.0"


def test_accelerator_extras_pin_the_base_jax():
  base = [r for r in requirements("options", "install_requires") if r.name == "jax"]
  assert len(base) == 1
  for extra in ("cuda12", "cuda13", "tpu"):
    (req,) = requirements("options.extras_require", extra)
    assert req.name == "jax" and req.extras == {extra} and req.specifier == base[0].specifier


def test_the_python_floor_is_tarfiles_data_filter():
  """tarfile's filter="data" came in 3.10.12 and 3.11.4: setup.cfg's python_requires and the
  Makefile's check of a Python (before it makes or reuses .venv) admit the same versions."""
  import re
  from packaging.specifiers import SpecifierSet
  cfg = configparser.ConfigParser()
  cfg.read(SETUP_CFG)
  requires = SpecifierSet(cfg["options"]["python_requires"])
  makefile = (SETUP_CFG.parent / "Makefile").read_text()
  condition = re.search(r"^PY_FLOOR := .*sys\.exit\(not (.*)\)$", makefile, re.M).group(1)
  for version, ok in [("3.10.11", False), ("3.10.12", True), ("3.11.0", False), ("3.11.3", False),
                      ("3.11.4", True), ("3.11.7", True), ("3.12.0", True), ("3.13.1", True)]:
    v = tuple(int(x) for x in version.split("."))
    assert (version in requires) == ok, (version, requires)
    assert eval(condition, {"v": v}) == ok, (version, condition)
