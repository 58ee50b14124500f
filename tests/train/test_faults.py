"""Training under faults: corrupt checkpoints, a full disk, a changed or unusable config.

Each ends in correct behaviour or one clear error, and nothing already written is lost.
"""
import os
import pathlib
import shutil

import jax
import numpy as np
import pytest

from dqnn import checkpoint
from dqnn import data
from dqnn import files
from dqnn import metrics
from dqnn import run_config
from dqnn import train
from faults_testlib import fill_disk_after, snapshot
from run_testlib import trained_run
from train_testlib import checkpoint_steps, read_metrics, restore_raw_state, tiny_config


def _without_timing(records):
  return [{k: v for k, v in r.items() if k != 'steps_per_sec'} for r in records]


@pytest.fixture
def finished_run(tmp_path_factory, tmp_path):
  """(workdir, config): a copy of the shared tiny run (4 steps, checkpoints 2 and 4)."""
  workdir, data_dir = trained_run(tmp_path_factory)
  shutil.copytree(workdir, tmp_path / 'run')
  return str(tmp_path / 'run'), tiny_config(data_dir=str(data_dir))


def _largest_data_file(workdir, step) -> pathlib.Path:
  state_dir = pathlib.Path(workdir, checkpoint.CHECKPOINT_DIR, str(step), 'state')
  return max(state_dir.rglob('d/*'), key=lambda path: path.stat().st_size)


def test_corrupt_latest_checkpoint_is_moved_aside_and_the_run_redone_exactly(finished_run):
  workdir, config = finished_run
  expected_state, expected_records = restore_raw_state(workdir, 4), read_metrics(workdir)
  data = _largest_data_file(workdir, 4)
  raw = bytearray(data.read_bytes())
  raw[len(raw) // 2] ^= 0xFF
  data.write_bytes(bytes(raw))

  assert train.train_and_evaluate(config, workdir)['step'] == 4
  assert os.listdir(os.path.join(workdir, checkpoint.CORRUPT_DIR)) == ['4']
  assert checkpoint_steps(workdir) == [2, 4]
  jax.tree.map(np.testing.assert_array_equal, restore_raw_state(workdir, 4), expected_state)
  assert _without_timing(read_metrics(workdir)) == _without_timing(expected_records)


def test_truncated_checkpoint_with_stop_is_named_and_left_in_place(finished_run):
  workdir, config = finished_run
  config.on_corrupt_checkpoint = 'stop'
  data = _largest_data_file(workdir, 4)
  data.write_bytes(data.read_bytes()[:64])
  before = snapshot(workdir)
  with pytest.raises(checkpoint.CorruptCheckpointError) as error:
    train.train_and_evaluate(config, workdir)
  assert 'checkpoints/4 cannot be read' in str(error.value)
  assert 'on_corrupt_checkpoint=fallback' in str(error.value)
  assert len(str(error.value).splitlines()) == 1
  assert snapshot(workdir) == before


def test_changed_config_is_refused_unless_allowed_and_then_both_are_kept(finished_run):
  workdir, config = finished_run
  before = snapshot(workdir)
  config.optimizer.learning_rate = 0.05
  config.label_smoothing = 0.1
  config.eval_every_steps = 2  # Bookkeeping: may change freely.
  with pytest.raises(run_config.ConfigChangedError) as error:
    train.train_and_evaluate(config, workdir)
  message = str(error.value)
  assert 'label_smoothing: was 0.0, now 0.1' in message
  assert 'optimizer.learning_rate: was 0.1, now 0.05' in message
  assert 'eval_every_steps' not in message and 'allow_config_change=True' in message
  assert snapshot(workdir) == before

  old_config = pathlib.Path(workdir, 'config.json').read_text()
  config.allow_config_change = True
  assert train.train_and_evaluate(config, workdir)['step'] == 4
  assert pathlib.Path(workdir, 'config.4.json').read_text() == old_config
  assert run_config.read(workdir)['optimizer']['learning_rate'] == 0.05


def test_resumable_fields_change_without_opting_in(finished_run):
  workdir, config = finished_run
  config.log_every_steps, config.keep_checkpoints, config.weight_images = 2, 5, False
  assert train.train_and_evaluate(config, workdir)['step'] == 4
  assert run_config.read(workdir)['keep_checkpoints'] == 5
  assert os.path.exists(os.path.join(workdir, 'config.4.json'))


@pytest.mark.parametrize('field, value, named', [
    ('global_batch_size', 0, 'global_batch_size=0: must be a positive integer'),
    ('global_batch_size', -8, 'global_batch_size=-8: must be a positive integer'),
    ('dtype', 'int8', "dtype='int8': must be one of 'float32', 'bfloat16', 'float16'"),
    ('model', 'resnet81', "model='resnet81': must be one of 'resnet18', .*'cifar_mobilenet_v2'. "
     "Did you mean 'resnet18'"),
    ('on_corrupt_checkpoint', 'ignore', "on_corrupt_checkpoint='ignore'"),
])
def test_unusable_config_is_one_clear_error_before_any_write(tmp_path, field, value, named):
  config = tiny_config(data_dir=str(tmp_path / 'no_data'))
  config[field] = value
  with pytest.raises(run_config.ConfigError, match=named):
    train.train_and_evaluate(config, str(tmp_path / 'workdir'))
  assert not (tmp_path / 'workdir').exists()


def test_full_disk_mid_run_loses_nothing_and_the_run_resumes(tmp_path_factory, tmp_path,
                                                             monkeypatch):
  straight, data_dir = trained_run(tmp_path_factory)
  config, workdir = tiny_config(data_dir=str(data_dir)), str(tmp_path / 'run')
  real_write, metric_writes = files.atomic_write_text, []
  with monkeypatch.context() as patch:

    def disk_full_at_the_third_record(path, text):
      if str(path).endswith(metrics.METRICS_FILE):
        metric_writes.append(path)
        if len(metric_writes) == 3:
          fill_disk_after(patch, 10)
      real_write(path, text)

    patch.setattr(files, 'atomic_write_text', disk_full_at_the_third_record)
    with pytest.raises(files.DiskFullError, match='metrics.jsonl; it still holds'):
      train.train_and_evaluate(config, workdir)
  assert [r['step'] for r in read_metrics(workdir)] == [1, 2]
  assert checkpoint_steps(workdir) == [2]

  assert train.train_and_evaluate(config, workdir)['step'] == 4
  assert _without_timing(read_metrics(workdir)) == _without_timing(read_metrics(straight))


def test_an_eval_that_fails_comes_after_its_checkpoint_and_is_redone_on_resume(
    tmp_path_factory, tmp_path, monkeypatch):
  straight, data_dir = trained_run(tmp_path_factory)
  config, workdir = tiny_config(data_dir=str(data_dir)), str(tmp_path / 'run')
  with monkeypatch.context() as patch:
    patch.setattr(train, 'evaluate', lambda *args: (_ for _ in ()).throw(MemoryError('eval')))
    with pytest.raises(MemoryError):
      train.train_and_evaluate(config, workdir)
  assert checkpoint_steps(workdir) == [2, 4]  # Step 4's training is not lost.
  assert 'eval' not in {r['split'] for r in read_metrics(workdir)}

  assert train.train_and_evaluate(config, workdir)['eval/top1'] >= 0
  assert _without_timing(read_metrics(workdir)) == _without_timing(read_metrics(straight))


def test_a_shorter_run_on_a_workdir_past_its_end_is_refused_and_changes_nothing(finished_run):
  workdir, config = finished_run
  config.num_train_steps = 2
  before = snapshot(workdir)
  with pytest.raises(run_config.ConfigError, match='at step 4, past this run.s 2 steps'):
    train.train_and_evaluate(config, workdir)
  assert snapshot(workdir) == before


def test_a_smaller_keep_removes_only_the_checkpoints_beyond_it_once_a_newer_one_is_saved(
    finished_run):
  workdir, config = finished_run
  config.num_train_steps, config.keep_checkpoints = 6, 1
  assert train.train_and_evaluate(config, workdir)['step'] == 6
  assert checkpoint_steps(workdir) == [6]


@pytest.mark.parametrize('damage', ['truncated', 'flipped block'])
def test_a_damaged_eval_file_stops_the_run_before_any_write(tmp_path_factory, tmp_path, damage):
  _, data_dir = trained_run(tmp_path_factory)
  shutil.copytree(data_dir, tmp_path / 'data')
  shard, = (tmp_path / 'data').rglob('cifar100-test.array_record-*')
  raw = bytearray(shard.read_bytes())
  if damage == 'truncated':
    raw = raw[:len(raw) // 2]
  else:
    raw[len(raw) // 3] ^= 0xFF
  shard.write_bytes(bytes(raw))
  config = tiny_config(data_dir=str(tmp_path / 'data'))
  with pytest.raises(data.DatasetDamagedError) as error:
    train.train_and_evaluate(config, str(tmp_path / 'run'))
  lines = str(error.value).splitlines()
  assert lines[0].startswith("Dataset 'cifar100' is damaged: ") and str(shard) in lines[0]
  assert lines[2] == f'  mv {shard.parent} {shard.parent}.damaged'
  assert lines[3].startswith('  python -m dqnn.data.prepare --source=npz')
  assert not (tmp_path / 'run').exists()
