"""What every command line of the project shares: flags whose mistakes end
in one `error:` line, and logs without other libraries' noise.

  app.run(main, flags_parser=console.parse_flags)   # before main runs
  console.start()                                   # first thing in main

start() drops other libraries' noise from the logs and turns on JAX's
persistent compilation cache (--compilation_cache=DIR|off; default
~/.cache/dare_jax/jax_cache, or $XDG_CACHE_HOME/dare_jax/jax_cache), so a
repeated command does not compile again. JAX_COMPILATION_CACHE_DIR in the
environment, where set, wins.

parse_flags validates the config (configlib.validate) of every command that
takes one, before its main runs. A misspelt config file or override is
caught before absl and ml_collections see it (they would end in a long
traceback with the hint inside an escaped string): the file is loaded here, each `--config.a.b=v` path is walked
through it, and the first unknown part is named with the closest field.
"""

from __future__ import annotations

import difflib
import importlib.util
import logging as pylogging
import os
import sys
from typing import Optional

from absl import flags
from absl import logging

from dare_jax.errors import ConfigError

CONFIG_FLAG = 'config'

flags.DEFINE_string(
    'compilation_cache', None,
    "JAX's persistent compilation cache: a folder, or 'off'. Default: "
    '$XDG_CACHE_HOME/dare_jax/jax_cache (~/.cache/dare_jax/jax_cache); '
    'JAX_COMPILATION_CACHE_DIR in the environment wins.')
# Every program is cached: at 0.2 s a warm `evaluate_features --rerank` still
# compiled its many small programs, 3.6 s against 2.6 s (docs/benchmarks.md).
_CACHE_MIN_COMPILE_SECS = 0.0


def default_cache_dir() -> str:
  root = os.environ.get('XDG_CACHE_HOME') or os.path.join(
      os.path.expanduser('~'), '.cache')
  return os.path.join(root, 'dare_jax', 'jax_cache')


def compilation_cache(choice: Optional[str]) -> Optional[str]:
  """Turns JAX's persistent compilation cache on in the folder `choice`
  (None: the default folder; 'off': not at all) unless the environment
  already names one; returns the folder in use, or None."""
  env = os.environ.get('JAX_COMPILATION_CACHE_DIR')
  if env:
    return env
  if choice == 'off':
    return None
  import jax  # pylint: disable=g-import-not-at-top
  folder = os.path.abspath(os.path.expanduser(choice or default_cache_dir()))
  try:
    os.makedirs(folder, exist_ok=True)
  except OSError as e:
    logging.warning('No compilation cache (%s: %s); pass '
                    '--compilation_cache=DIR or --compilation_cache=off.',
                    folder, e)
    return None
  jax.config.update('jax_compilation_cache_dir', folder)
  jax.config.update('jax_persistent_cache_min_compile_time_secs',
                    _CACHE_MIN_COMPILE_SECS)
  return folder


def start() -> None:
  """First thing in a command's main: quiet logs, the compilation cache."""
  quiet_logs()
  compilation_cache(flags.FLAGS.compilation_cache)


def _config_args(argv) -> tuple[Optional[str], list[str]]:
  """(the --config file, the override paths) named in argv."""
  path, overrides = None, []
  args = list(argv[1:])
  if '--' in args:
    args = args[:args.index('--')]
  prefix = f'--{CONFIG_FLAG}'
  for i, a in enumerate(args):
    if a == prefix and i + 1 < len(args):
      path = args[i + 1]
    elif a.startswith(prefix + '='):
      path = a[len(prefix) + 1:]
    elif a.startswith(prefix + '.'):
      overrides.append(a[len(prefix) + 1:].split('=', 1)[0])
    elif a.startswith(f'--no{CONFIG_FLAG}.'):  # a boolean set to False
      overrides.append(a[len(f'--no{CONFIG_FLAG}.'):])
  return path, overrides


def _load_config(arg: str):
  path, _, param = arg.partition(':')
  if not os.path.isfile(path):
    folder = os.path.dirname(path) or '.'
    known = sorted(f for f in os.listdir(folder) if f.endswith('.py') and
                   not f.startswith('_')) if os.path.isdir(folder) else []
    close = difflib.get_close_matches(os.path.basename(path), known, n=1)
    hint = (f'; did you mean --{CONFIG_FLAG}={os.path.join(folder, close[0])}?'
            if close else '')
    where = (f' ({folder}/ has {", ".join(known)})' if known else
             f' ({folder}/ does not exist)' if not os.path.isdir(folder) else '')
    raise ConfigError(f'--{CONFIG_FLAG}={arg}: no such file{hint}{where}')
  spec = importlib.util.spec_from_file_location('_dare_config_check', path)
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
  except SyntaxError as e:
    raise ConfigError(f'--{CONFIG_FLAG}={arg}: {e.filename}:{e.lineno}: '
                      f'{e.msg} ({(e.text or "").strip()!r}); fix the '
                      'file.') from None
  except ImportError as e:
    raise ConfigError(f'--{CONFIG_FLAG}={arg}: {e}; a config imports '
                      'dare_jax (pip install -e .) and builds on other '
                      'configs with defaults.sibling_config.') from None
  if not hasattr(module, 'get_config'):
    raise ConfigError(f'--{CONFIG_FLAG}={arg}: the file has no get_config(); '
                      'a config file defines get_config() returning a '
                      'ConfigDict (see configs/default.py).')
  return module.get_config(param) if param else module.get_config()


def check_overrides(config, overrides, config_arg: str) -> None:
  """ConfigError naming the first override whose path config lacks."""
  for dotted in overrides:
    node, walked = config, []
    for part in dotted.split('.'):
      if not hasattr(node, 'keys') or '[' in part:
        break  # a leaf's attribute or an index: ml_collections decides
      if part not in node.keys():
        close = difflib.get_close_matches(part, list(node.keys()), n=1)
        parent = '.'.join([CONFIG_FLAG] + walked)
        fix = ('.'.join([CONFIG_FLAG] + walked + [close[0]]) if close else
               None)
        hint = f' Did you mean --{fix}?' if fix else ''
        raise ConfigError(
            f'--{CONFIG_FLAG}.{dotted}: {parent} has no field {part!r} '
            f'({config_arg}).{hint} The fields are in dare_jax/defaults.py.')
      node, walked = node[part], walked + [part]


def _one_line(e: BaseException) -> str:
  # KeyError's str() is its argument's repr, and ml_collections wraps one
  # exception in another: unwrap to the innermost message.
  while len(e.args) == 1 and isinstance(e.args[0], BaseException):
    e = e.args[0]
  text = e.args[0] if len(e.args) == 1 and isinstance(e.args[0], str) else (
      str(e))
  return ' '.join(text.split())


def parse_flags(argv):
  """app.run's flags_parser: absl's parsing, with the config's file and
  overrides checked first and every parsing error as one line (exit 1)."""
  try:
    path, overrides = _config_args(argv)
    if path is not None:
      check_overrides(_load_config(path), overrides, path)
    rest = flags.FLAGS(argv)
    if path is not None:
      config = flags.FLAGS[CONFIG_FLAG].value  # a deferred load error here
      # Every field, for every command that takes a config (the device
      # splits come later, when the devices are known).
      from dare_jax import configlib  # pylint: disable=g-import-not-at-top
      configlib.validate(config, num_devices=None)
    return rest
  except ConfigError as e:
    sys.exit(f'error: {e}')
  except (flags.Error, AttributeError, KeyError, TypeError, ValueError,
          OSError) as e:
    sys.exit(f'error: {_one_line(e)}')


# Lines that other libraries log on every run and that say nothing a user
# can act on: JAX probing for a TPU on a CPU or GPU host, Orbax narrating
# each save and that a checkpoint opened for reading is read-only, jax2onnx
# narrating a conversion.
_NOISE = ("Unable to initialize backend 'tpu'",
          'Given directory is read only')


def _keep(record) -> bool:
  path = record.pathname
  # Orbax narrates each save; jax2onnx (and onnx_ir, its graph passes)
  # each conversion and its optional examples (MaxText, MaxDiffusion).
  if (any(lib in path for lib in ('orbax', 'jax2onnx', 'onnx_ir')) and
      record.levelno < pylogging.WARNING):
    return False
  if ('orbax' in path or 'xla_bridge' in path) and any(
      n in record.getMessage() for n in _NOISE):
    return False
  return True


def quiet_logs() -> None:
  """Drops the noise above from absl's handler (idempotent)."""
  handler = logging.get_absl_handler()
  if _keep not in handler.filters:
    handler.addFilter(_keep)
