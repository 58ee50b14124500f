"""Atomic writes: a full disk mid-write leaves the previous file, and no partial file, behind."""
import errno
import os

import pytest

from dqnn import files
from faults_testlib import fill_disk_after


def test_full_disk_keeps_the_previous_file_and_says_so(tmp_path, monkeypatch):
  path = tmp_path / 'config.json'
  files.atomic_write_text(path, 'previous')
  fill_disk_after(monkeypatch, 3)
  with pytest.raises(files.DiskFullError, match='No space left.*config.json; it still holds its '
                     'previous contents') as error:
    files.atomic_write_text(path, 'new contents')
  assert error.value.errno == errno.ENOSPC
  assert path.read_text() == 'previous'
  assert os.listdir(tmp_path) == ['config.json']


def test_other_errors_pass_through_and_leave_no_partial_file(tmp_path):
  with pytest.raises(FileNotFoundError):
    files.atomic_write_bytes(tmp_path / 'missing_dir' / 'x', b'data')
  files.atomic_write_bytes(tmp_path / 'x', b'data')
  assert (tmp_path / 'x').read_bytes() == b'data' and os.listdir(tmp_path) == ['x']
