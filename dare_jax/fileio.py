"""Files anywhere: local paths, or gs:// (s3://, az://) through etils.epath.

Every file a run writes or reads besides the dataset and the user's own
images goes through here -- the workdir's logs, metrics, features and
figures, a features file, a bundle, a gallery -- so a workdir, features
file or bundle can be a `gs://bucket/...` path. Orbax writes and reads the
checkpoints itself (its own gs:// support: etils.epath for the metadata,
TensorStore for the arrays), and jax.profiler writes traces itself.

epath picks the backend: tf.io.gfile when TensorFlow is installed, else
fsspec (pip install gcsfs for gs://). Local writes are atomic (a temporary
file renamed over the target, so a crash never leaves half a file); on an
object store a file is one object, which appears whole or not at all.
"""

from __future__ import annotations

import io
import os
import tempfile
import time
from typing import Mapping, Union

import numpy as np
from etils import epath

PathLike = Union[str, os.PathLike]
REMOTE_PREFIXES = ('gs://', 's3://', 'az://')


def is_remote(path: PathLike) -> bool:
  return os.fspath(path).startswith(REMOTE_PREFIXES)


def path(p: PathLike) -> epath.Path:
  return epath.Path(p)


def absolute(p: PathLike) -> str:
  """An absolute local path, or the remote path as it is."""
  p = os.fspath(p)
  return p if is_remote(p) else os.path.abspath(p)


def join(base: PathLike, *names: str) -> str:
  base = os.fspath(base)
  if not is_remote(base):
    return os.path.join(base, *names)
  return '/'.join([base.rstrip('/'), *names])


def basename(p: PathLike) -> str:
  return os.path.basename(os.fspath(p).rstrip('/'))


# epath sends local paths to os / os.path itself.
def exists(p: PathLike) -> bool:
  return path(p).exists()


def isfile(p: PathLike) -> bool:
  return path(p).is_file()


def isdir(p: PathLike) -> bool:
  return path(p).is_dir()


def makedirs(p: PathLike) -> None:
  path(p).mkdir(parents=True, exist_ok=True)


def read_bytes(p: PathLike) -> bytes:
  return path(p).read_bytes()


def read_text(p: PathLike) -> str:
  return path(p).read_text()


def write_bytes(p: PathLike, data: bytes) -> None:
  """Writes a whole file: atomic locally, one object remotely."""
  p = os.fspath(p)
  if is_remote(p):
    path(p).write_bytes(data)
    return
  tmp = p + '.tmp'
  with open(tmp, 'wb') as f:
    f.write(data)
  os.replace(tmp, p)


def write_text(p: PathLike, text: str) -> None:
  write_bytes(p, text.encode('utf-8'))


def save_npz(p: PathLike, arrays: Mapping[str, np.ndarray]) -> None:
  """numpy.savez to p (uncompressed), atomically."""
  p = os.fspath(p)
  if is_remote(p):
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    path(p).write_bytes(buf.getvalue())
    return
  tmp = p + '.tmp.npz'  # savez appends .npz to a name without it
  np.savez(tmp, **arrays)
  os.replace(tmp, p)


def open_npz(p: PathLike):
  """numpy.load of an .npz without pickles (a context manager, as np.load);
  a remote file is read into memory first."""
  p = os.fspath(p)
  if is_remote(p):
    return np.load(io.BytesIO(read_bytes(p)), allow_pickle=False)
  return np.load(p, allow_pickle=False)


def is_zipfile(p: PathLike) -> bool:
  import zipfile  # pylint: disable=g-import-not-at-top
  if not is_remote(p):
    return zipfile.is_zipfile(p)
  with path(p).open('rb') as f:
    head = f.read(4)
  return head in (b'PK\x03\x04', b'PK\x05\x06')


def save_figure(fig, p: PathLike, **savefig_kwargs) -> None:
  """fig.savefig(p) as PNG, atomically."""
  buf = io.BytesIO()
  fig.savefig(buf, format='png', **savefig_kwargs)
  write_bytes(p, buf.getvalue())


class AppendLog:
  """A text file that lines are appended to (train_log.jsonl).

  Local: opened for appending, flushed after every line. Remote (an object
  store cannot append): the file's lines are kept in memory, starting from
  what is there (a resumed run), and the whole object is written again when
  `flush_every_s` seconds have passed since the last write, and at close.
  """

  def __init__(self, p: PathLike, flush_every_s: float = 30.0):
    self.path = os.fspath(p)
    self._remote = is_remote(self.path)
    self._every = flush_every_s
    if self._remote:
      self._text = [read_text(self.path)] if exists(self.path) else []
      self._written = time.monotonic()
      self._dirty = False
    else:
      self._f = open(self.path, 'a', encoding='utf-8')

  def write_line(self, line: str) -> None:
    if not self._remote:
      self._f.write(line + '\n')
      self._f.flush()
      return
    self._text.append(line + '\n')
    self._dirty = True
    if time.monotonic() - self._written >= self._every:
      self.flush()

  def flush(self) -> None:
    if self._remote and self._dirty:
      path(self.path).write_text(''.join(self._text))
      self._written, self._dirty = time.monotonic(), False

  def close(self) -> None:
    if self._remote:
      self.flush()
    else:
      self._f.close()


def check_writable(p: PathLike, what: str = '--workdir') -> None:
  """ConfigError, before any work, unless the folder p can be created or
  written: not a file, not below a file, on a writable file system. Object
  stores (gs://) are not probed (a write there fails with the store's own
  message)."""
  from dare_jax import errors  # pylint: disable=g-import-not-at-top
  if is_remote(p):
    return
  target = os.path.abspath(os.fspath(p))
  if os.path.exists(target) and not os.path.isdir(target):
    raise errors.ConfigError(f'{what}={p} is a file, not a folder; give a '
                             'folder (it is created if missing).')
  probe = target
  while not os.path.exists(probe):
    parent = os.path.dirname(probe)
    if parent == probe:
      break
    probe = parent
  if not os.path.isdir(probe):
    raise errors.ConfigError(f'{what}={p}: {probe} is a file, so no folder '
                             'can be made below it; give another path.')
  if not os.access(probe, os.W_OK | os.X_OK):
    raise errors.ConfigError(
        f'{what}={p}: {probe} is not writable (permissions, or a read-only '
        'file system); give a folder you can write, e.g. under $HOME.')
  # os.access ignores a read-only mount for root: try a file.
  try:
    fd, tmp = tempfile.mkstemp(prefix='.dare_jax_write_check', dir=probe)
    os.close(fd)
    os.remove(tmp)
  except OSError as e:
    raise errors.ConfigError(
        f'{what}={p}: cannot write in {probe} ({e.strerror}); give a folder '
        'you can write, e.g. under $HOME.') from None
