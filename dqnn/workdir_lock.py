"""One training run per workdir: an advisory lock held for the whole run.

Two runs on one workdir would each write `config.json`, checkpoints and metrics, the last writer
winning each file. The lock is `fcntl.flock` on `<workdir>/.dqnn_lock`: the kernel releases it
when its process ends, however it ends, so a killed run never leaves a stale lock. URLs (gs://)
have no such lock and are not locked; several processes of one run lock from process 0 only.
"""
import contextlib
import datetime
import errno
import fcntl
import os
import socket
from typing import Iterator

LOCK_FILE = '.dqnn_lock'


class WorkdirInUseError(RuntimeError):
  """Another process holds the workdir's lock."""


@contextlib.contextmanager
def hold(workdir: str) -> Iterator[None]:
  """Holds `workdir`'s lock (creating `workdir`) or raises `WorkdirInUseError` naming the holder.

  A workdir this call created and that is left holding only the lock is removed again, so a run
  refused before writing anything leaves no trace.
  """
  if '://' in workdir:
    yield
    return
  created = not os.path.exists(workdir)
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, LOCK_FILE)
  with open(path, 'a+', encoding='utf-8') as lock:
    try:
      fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
      if error.errno not in (errno.EAGAIN, errno.EACCES):
        raise
      lock.seek(0)
      holder = lock.read().strip() or 'another process'
      raise WorkdirInUseError(
          f'{holder} is training in --workdir={workdir}. Wait for it to finish or stop it, or '
          'use another --workdir.') from None
    lock.seek(0)
    lock.truncate()
    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')
    lock.write(f'dqnn (pid {os.getpid()} on {socket.gethostname()}, started {started})')
    lock.flush()
    try:
      yield
    finally:
      if created and os.listdir(workdir) == [LOCK_FILE]:
        os.remove(path)
        os.rmdir(workdir)
