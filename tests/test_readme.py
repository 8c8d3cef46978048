"""The README's GPU commands, as written: data.prepare of the TFDS imagenet2012 set, data.stats
of the prepared folder, and the one-GPU and two-GPU training commands, in a home folder whose
~/tensorflow_datasets/downloads/manual holds an ILSVRC2012 archive of six sample photos. Only
the sizes are changed, by overrides added at the end, so that they run on a CPU in a minute,
and the two-GPU run gets a workdir of its own (as written it would resume the one-GPU run,
already finished). Left out: the section's first block, which installs jax's CUDA or TPU build
and lists the accelerators; it needs the accelerator and the network. And the Layout table: every
module in it, none importing a row above its own."""
import ast
import os
import pathlib
import re
import shlex
import subprocess
import sys

import pytest

from tests import imagenet_archive

ROOT = pathlib.Path(__file__).resolve().parents[1]
SAMPLES = ROOT.parent / "shared" / "data" / "imagenet_samples"
SMALL = ["--config.model.width=0.125", "--config.model.num_classes=6", "--config.mesh.model=1",
         "--config.mesh.num_cpu_devices=1", "--config.train.batch_size=4",
         "--config.train.num_steps=2", "--config.eval.batch_size=6",
         "--config.eval.ten_crop=False", "--config.data.threads=2"]


def readme_commands(section_title):
  """The commands of the first bash block of the README section, continuation lines joined."""
  text = (ROOT / "README.md").read_text()
  section = text.split(f"## {section_title}", 1)[1].split("\n## ", 1)[0]
  blocks = re.findall(r"```bash\n(.*?)```", section, re.S)
  joined = blocks[-1].replace("\\\n", " ")
  return [line.split("#")[0].strip() for line in joined.splitlines()
          if line.strip() and not line.strip().startswith("#")]


@pytest.mark.slow
@pytest.mark.skipif(not SAMPLES.is_dir(), reason=f"needs the ImageNet sample photos ({SAMPLES})")
def test_the_gpu_sections_commands_run_as_written(tmp_path):
  home = tmp_path / "home"
  manual = home / "tensorflow_datasets" / "downloads" / "manual"
  manual.mkdir(parents=True)
  # Both splits need the same classes: the training photos are filed under the classes TFDS
  # gives the six validation images.
  imagenet_archive.write(manual, sorted(SAMPLES.glob("*.JPEG"))[:6], per_class=2,
                         synsets=imagenet_archive.first_val_labels(6))
  prepared, workdir = tmp_path / "imagenet256", tmp_path / "paper"
  commands = readme_commands("On a GPU or TPU")
  prepare, stats, one_gpu, two_gpus = commands
  assert "alexnet_jax.data.prepare" in prepare and "alexnet_jax.data.stats" in stats
  assert "--config.mesh.model=1" in one_gpu and "--config.mesh.model=2" in two_gpus
  # Two CPU devices stand in for the two GPUs; the mesh is the command's own.
  two_small = [a for a in SMALL if not a.startswith("--config.mesh.")] + [
      "--config.mesh.num_cpu_devices=2"]
  env = dict(os.environ, HOME=str(home), TF_CPP_MIN_LOG_LEVEL="2")
  outputs = []
  for command, extra, run_dir in ((prepare, [], workdir), (stats, [], workdir),
                                  (one_gpu, SMALL, workdir),
                                  (two_gpus, two_small, tmp_path / "paper_two_gpus")):
    argv = shlex.split(command.replace("/data/imagenet256", str(prepared))
                       .replace("workdirs/paper", str(run_dir)))
    assert argv[0] == ".venv/bin/python"
    out = subprocess.run([sys.executable, *argv[1:], *extra], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, f"{command}\n{out.stdout}\n{out.stderr}"
    outputs.append(out.stdout)
  assert "train: 12 images" in outputs[0] and "validation: 6 images" in outputs[0]
  assert sorted(os.listdir(prepared)) == ["manifest.json", "train", "validation"]
  assert "12 images ->" in outputs[1]
  assert "Data: image folder" in outputs[2] and "12 training, 6 validation images" in outputs[2]
  assert "Finished 2 steps" in outputs[2]
  assert "Finished 2 steps" in outputs[3] and "Resumed" not in outputs[3]
  assert "Mesh: data=1 x model=1 over 1 cpu device(s)" in outputs[2], outputs[2][:2000]
  assert "Mesh: data=1 x model=2 over 2 cpu device(s)" in outputs[3], outputs[3][:2000]


def layout_rows():
  """{module path: its row's index} of the README's Layout table, top row 0."""
  table = (ROOT / "README.md").read_text().split("## Layout\n", 1)[1].split("\n## ", 1)[0]
  rows = {}
  for index, line in enumerate(r for r in table.splitlines() if r.startswith("| `")):
    names = re.findall(r"`([^`]+)`", line.split("|")[1])  # The first cell: paths only.
    folder = names[0].rsplit("/", 1)[0]
    for name in names:
      path = name if "/" in name else f"{folder}/{name}"
      found = sorted((ROOT / path).rglob("*.py")) if path.endswith("/") else [ROOT / path]
      rows.update({str(f.relative_to(ROOT)): index for f in found})
  return rows


def test_the_layout_table_lists_every_module_below_those_that_import_it():
  rows = layout_rows()
  modules = {str(p.relative_to(ROOT)) for p in (ROOT / "alexnet_jax").rglob("*.py")}
  assert modules - set(rows) <= {"alexnet_jax/__init__.py"}, "not in README's Layout table"
  upward = []
  for module in sorted(modules & set(rows)):
    package = module.rsplit("/", 1)[0].replace("/", ".")
    for node in ast.walk(ast.parse((ROOT / module).read_text())):
      if isinstance(node, ast.ImportFrom) and node.module:
        base = node.module if not node.level else f"{package}.{node.module}"
        names = [f"{base}.{alias.name}" for alias in node.names] + [base]
      elif isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
      else:
        continue
      for name in names:
        path = name.replace(".", "/")
        target = next((t for t in (f"{path}.py", f"{path}/__init__.py") if t in rows), None)
        if target and target != module and rows[target] < rows[module]:
          upward.append(f"{module} imports {target}")
  assert not upward, "a module imports one drawn above it in README's Layout table"
