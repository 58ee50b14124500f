"""Fault injection for the tests: a disk that fills up."""
import errno
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
