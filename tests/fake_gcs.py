"""gs:// for tests, offline: an fsspec filesystem over a local folder.

The fixture fake_gcs makes etils.epath (the library every dare_jax
file path goes through) send gs://BUCKET/KEY to ROOT/BUCKET/KEY through its
fsspec backend -- the backend it uses for gs:// when TensorFlow is not
installed -- so the code under test takes the same remote branch as on a
real bucket, while the test reads the result from disk. Nothing here is a
GCS emulator: there is no append, no rename and no directories on the
store (mkdir is allowed and does nothing visible, as on GCS), which is
what a real bucket gives too.
"""

import os
import sys

import fsspec
import pytest
from etils.epath import backend as epath_backend
from etils.epath import gpath
from fsspec.implementations.local import LocalFileSystem


class _FakeGCS(LocalFileSystem):
  protocol = ('gs', 'gcs')
  root = None  # set by install

  def __init__(self, *args, finalize_on_close=None, **kwargs):
    del finalize_on_close  # gcsfs's option; nothing to finalise here
    # An object's "folders" need not exist first, as on GCS.
    super().__init__(*args, auto_mkdir=True, **kwargs)

  @classmethod
  def _strip_protocol(cls, path):
    path = os.fspath(path)
    for prefix in ('gs://', 'gcs://'):
      if path.startswith(prefix):
        return os.path.join(cls.root, path[len(prefix):]).rstrip('/')
    if path.startswith(cls.root):
      return path.rstrip('/')
    raise ValueError(f'fake gs:// got a non-gs path: {path!r}')

  def mv(self, *args, **kwargs):  # an object store renames nothing
    raise NotImplementedError('rename on the fake object store')

  def open(self, path, mode='rb', **kwargs):
    if 'a' in mode:
      raise NotImplementedError('append on the fake object store')
    return super().open(path, mode, **kwargs)


@pytest.fixture
def fake_gcs(tmp_path, monkeypatch):
  """The local folder that gs:// maps to during the test (module docstring);
  everything is put back afterwards."""
  root = str(tmp_path / 'gcs')
  os.makedirs(root)
  monkeypatch.setattr(_FakeGCS, 'root', root)
  monkeypatch.setattr(gpath, '_is_tf_installed', lambda: False)
  registry = sys.modules['fsspec.registry']._registry  # pylint: disable=protected-access
  for name in ('gs', 'gcs'):
    monkeypatch.setitem(registry, name, _FakeGCS)
  _clear_caches()
  yield root
  _clear_caches()


def _clear_caches():
  fsspec.AbstractFileSystem.clear_instance_cache()
  epath_backend.fsspec_backend._get_filesystem.cache_clear()  # pylint: disable=protected-access


def activate(root: str) -> None:
  """The same for a whole process (a CLI under test; nothing put back)."""
  _FakeGCS.root = os.path.abspath(root)
  gpath._is_tf_installed = lambda: False  # pylint: disable=protected-access
  registry = sys.modules['fsspec.registry']._registry  # pylint: disable=protected-access
  for name in ('gs', 'gcs'):
    registry[name] = _FakeGCS
  _clear_caches()


def cli(root: str, module: str, *args: str) -> list[str]:
  """argv that runs `python -m module args` with gs:// mapped to root."""
  code = ('import runpy, sys; from tests import fake_gcs; '
          f'fake_gcs.activate({root!r}); sys.argv = [{module!r}] + '
          f'{list(args)!r}; runpy.run_module({module!r}, run_name="__main__")')
  return [sys.executable, '-c', code]
