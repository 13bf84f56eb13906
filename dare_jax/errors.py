"""Errors the user can fix from the command line or the config.

main.py prints these as one clear message (no traceback) and exits 1; every
other exception is a bug and keeps its traceback.
"""


class UserError(Exception):
  """Bad input: a config field, a path, a dataset, a workdir."""


class ConfigError(UserError, ValueError):
  pass


class DataError(UserError, ValueError):
  pass


class DataNotFoundError(UserError, FileNotFoundError):
  pass


class CheckpointError(UserError, ValueError):
  pass
