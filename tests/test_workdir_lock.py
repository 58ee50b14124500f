import os
import subprocess
import sys
import textwrap

import pytest

from dqnn import workdir_lock


def test_a_second_holder_is_refused_with_who_holds_it(tmp_path):
  workdir = str(tmp_path / 'run')
  with workdir_lock.hold(workdir):
    (tmp_path / 'run' / 'config.json').write_text('{}')
    with pytest.raises(workdir_lock.WorkdirInUseError,
                       match=rf'dqnn \(pid {os.getpid()} on .*, started .*\) is training in '
                             rf'--workdir={workdir}\. .*use another --workdir'):
      with workdir_lock.hold(workdir):
        pass
  with workdir_lock.hold(workdir):  # Released on exit.
    pass
  assert (tmp_path / 'run' / 'config.json').read_text() == '{}'


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
  workdir = str(tmp_path / 'run')
  os.makedirs(workdir)
  # Killed mid-run: os._exit runs no cleanup code. A fresh interpreter, not a fork of this
  # multithreaded (JAX) process.
  holder = subprocess.run([sys.executable, '-c', textwrap.dedent(f'''
      import os
      from dqnn import workdir_lock
      with workdir_lock.hold({workdir!r}):
        os._exit(1)
      ''')], check=False)
  assert holder.returncode == 1 and os.path.exists(os.path.join(workdir, workdir_lock.LOCK_FILE))
  with workdir_lock.hold(workdir):
    pass


def test_a_refused_run_leaves_no_workdir_it_created(tmp_path):
  workdir = tmp_path / 'new'
  with pytest.raises(ValueError, match='config problem'):
    with workdir_lock.hold(str(workdir)):
      raise ValueError('config problem')
  assert not workdir.exists()
  workdir.mkdir()
  with workdir_lock.hold(str(workdir)):
    pass
  assert workdir.exists()  # It existed before: left as it was, lock file aside.
