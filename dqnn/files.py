"""Writing files whole or not at all: a temporary name in the same folder, then a rename.

A crash or a full disk mid-write leaves the previous file (or none) in place, never a partial
one. Paths may be local or any `etils.epath` location that supports rename (gs:// included).
"""
import errno
import os

from etils import epath

# Errors that mean "the disk is full" rather than "the program is wrong".
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


class DiskFullError(OSError):
  """A write failed for lack of space; what it was replacing is unchanged."""


def is_disk_full(error: BaseException) -> bool:
  """Whether `error` (also as a library wraps it, e.g. TensorStore) reports a full disk."""
  return ((isinstance(error, OSError) and error.errno in _NO_SPACE)
          or 'No space left on device' in str(error))


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
  """Replaces `path` by `data`; on any error `path` keeps its previous contents."""
  path = epath.Path(path)
  partial = path.with_name(f'.{path.name}.partial-{os.getpid()}')
  try:
    partial.write_bytes(data)
    partial.replace(path)
  except OSError as error:
    partial.unlink(missing_ok=True)
    if is_disk_full(error):
      raise DiskFullError(
          errno.ENOSPC, f'No space left on the device while writing {path}; it still holds its '
          'previous contents. Free some space and run again (training resumes from its last '
          'checkpoint).') from error
    raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
  atomic_write_bytes(path, text.encode('utf-8'))
