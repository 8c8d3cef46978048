"""The errors a user can cause: a setting, a file, the workdir, a checkpoint, a process. Their
message names what is wrong and what to do, so a command prints it as one line and keeps the
traceback in its log file; every other exception is a bug and shows its traceback."""


class UserError(Exception):
  """Something the user gave cannot work; the message says which and how to fix it."""


class ConfigError(UserError, ValueError):
  """A setting, a flag or the data it names that cannot work."""


class MissingFileError(UserError, FileNotFoundError):
  """A file or folder the command needs is absent."""


class WriteRefusedError(UserError, OSError):
  """A file the command writes that the filesystem refused: no space, a quota, permissions, a
  read-only mount."""


class DivergedError(UserError, FloatingPointError):
  """Training went non-finite: a learning rate too high for the setting, or broken input."""
