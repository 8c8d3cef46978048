"""The errors a user can cause (a setting, a file, the workdir, a checkpoint, a process): a
command prints one as one line and keeps its traceback; any other exception is a bug."""


class UserError(Exception):
  """Something the user gave cannot work; the message says which and how to fix it."""


class ConfigError(UserError, ValueError):
  """A setting, a flag or the data it names that cannot work."""


class MissingFileError(UserError, FileNotFoundError):
  """A file or folder the command needs is absent."""


class WriteRefusedError(UserError, OSError):
  """A file written that the filesystem refused: no space, a quota, permissions, read-only."""


class DivergedError(UserError, FloatingPointError):
  """Training went non-finite: a learning rate too high for the setting, or broken input."""
