"""The metric log keeps every record written before a full disk; pending sums round-trip."""
import json

import jax.numpy as jnp
import numpy as np
import pytest

from dqnn import files
from dqnn import metrics
from faults_testlib import fill_disk_after


def _records(workdir):
  return [json.loads(line) for line in (workdir / metrics.METRICS_FILE).read_text().splitlines()]


def test_full_disk_loses_no_earlier_record(tmp_path, monkeypatch):
  log = metrics.MetricLog(str(tmp_path), is_main_process=True)
  for step in (1, 2):
    log.write(step, 'train', {'loss': step})
  with monkeypatch.context() as patch:
    fill_disk_after(patch, 10)
    with pytest.raises(files.DiskFullError):
      log.write(3, 'train', {'loss': 3})
    with pytest.raises(files.DiskFullError):
      log.truncate_after(1)
  log.close()
  assert [r['step'] for r in _records(tmp_path)] == [1, 2]
  # A resumed run (from step 2) reads them back and carries on.
  log = metrics.MetricLog(str(tmp_path), is_main_process=True)
  log.truncate_after(2)
  log.write(3, 'train', {'loss': 3})
  log.close()
  assert [r['step'] for r in _records(tmp_path)] == [1, 2, 3]


def test_pending_sums_resume_exactly():
  sums = {'loss': jnp.float32(1) / 3, 'top1': jnp.float32(0.1)}
  pending = json.loads(json.dumps(metrics.pending_sums(sums, 2)))
  resumed, count = metrics.resumed_sums(pending)
  assert count == 2
  for name, value in sums.items():
    assert resumed[name].dtype == jnp.float32
    np.testing.assert_array_equal(resumed[name], value)
  assert metrics.pending_sums(None, 0) == {} and metrics.resumed_sums({}) == (None, 0)


def test_a_torn_record_is_dropped_and_the_file_as_it_was_kept(tmp_path, caplog):
  torn = '{"step": 1, "split": "train", "loss": 1.0}\n{"step": 2, "spl'
  (tmp_path / metrics.METRICS_FILE).write_text(torn)
  log = metrics.MetricLog(str(tmp_path), is_main_process=True)
  log.truncate_after(2)
  log.write(3, 'train', {'loss': 3})
  log.close()
  assert [r['step'] for r in _records(tmp_path)] == [1, 3]
  assert (tmp_path / f'{metrics.METRICS_FILE}.damaged').read_text() == torn
  assert '1 line(s) are not metric records' in caplog.text


def test_a_resume_without_its_metric_log_says_records_are_lost(tmp_path, caplog):
  log = metrics.MetricLog(str(tmp_path), is_main_process=True)
  log.truncate_after(0)
  assert 'records before it are lost' not in caplog.text  # A fresh run has none yet.
  log.truncate_after(8)
  log.close()
  assert 'resumes from step 8: the records before it are lost' in caplog.text
