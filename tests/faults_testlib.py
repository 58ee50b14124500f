"""Fault injection for the tests: a disk that fills up; what a folder held."""
import errno
import hashlib
import os

from etils import epath


def fill_disk_after(monkeypatch, nbytes: int) -> None:
  """Every later write stores its first `nbytes` bytes and then fails with ENOSPC."""
  path_class = type(epath.Path('/'))

  def write_bytes(self, data):
    with open(self, 'wb') as f:
      f.write(data[:nbytes])
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))

  monkeypatch.setattr(path_class, 'write_bytes', write_bytes)


def snapshot(directory) -> dict[str, tuple[int, str]]:
  """(mtime, content hash) of every file under `directory`."""
  files = {}
  for root, _, names in os.walk(directory):
    for name in names:
      path = os.path.join(root, name)
      with open(path, 'rb') as f:
        files[os.path.relpath(path, directory)] = (os.stat(path).st_mtime_ns,
                                                   hashlib.sha256(f.read()).hexdigest())
  return files
