"""Every file of a workdir, named once; `root` is a pathlib.Path locally and an etils.epath.Path
for a URL (gs://...), which pathlib would take for a local folder named `gs:`."""
import pathlib

from etils import epath

CONFIG = "config.json"                    # The resolved config, written at the start.
METRICS = "metrics.jsonl"                 # A JSON line per log step, epoch and evaluation.
SUMMARY = "summary.json"                  # Final and best errors, speed, best_step.
TENSORBOARD = "tensorboard"               # The same scalars; traces in plugins/profile/.
CHECKPOINTS = "checkpoints"               # orbax's steps.
UNREADABLE = "unreadable_checkpoints"     # Damaged steps moved aside by restore_step.
CLASSES = "classes.json"                  # The class names, in label order.
CONSTANTS = "preprocess_constants.npz"    # The mean image and PCA basis.
LOCK = "run.lock"                         # The host and pid of the run training there.
LOG = "log.txt"                           # The libraries' log (logs.py: one per process).


def is_local(workdir) -> bool:
  return "://" not in str(workdir)


def root(workdir):
  """The workdir (or any path in it) itself: a pathlib.Path (local) or an epath.Path (a URL)."""
  if is_local(workdir):
    return pathlib.Path(workdir).expanduser()
  return epath.Path(str(workdir))


def size(path) -> int:
  """A file's size in bytes: os.stat's st_size locally, epath's length at a URL."""
  stat = path.stat()
  return stat.st_size if hasattr(stat, "st_size") else stat.length


def files_under(directory):
  """The files below `directory`, relative and sorted (a URL is walked: epath refuses `**`)."""
  if isinstance(directory, pathlib.Path):
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file())
  return sorted(str((folder / name).relative_to(directory))
                for folder, _, names in directory.walk() for name in names)


def file(workdir, name):
  return root(workdir) / name


def checkpoints(workdir):
  """An absolute directory: orbax refuses relative ones."""
  return (root(workdir).resolve() if is_local(workdir) else root(workdir)) / CHECKPOINTS


def per_class_csv(workdir, step):
  return root(workdir) / f"per_class_step{step}.csv"


def confusion_png(workdir, step):
  return root(workdir) / f"confusion_step{step}.png"
