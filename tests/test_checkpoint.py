"""Checkpoint faults: corrupt or truncated files are named, never restored; the previous is used."""
import logging
import os
import pathlib
import shutil
import sys
import types

import jax
import jax.numpy as jnp
from flax import serialization
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest

from dqnn import checkpoint
from dqnn import files
from dqnn import train

_CONFIG = ml_collections.ConfigDict({'model': 'm', 'quant': {}, 'dataset': 'd'})


def _state(step: int, levels=(-1.0, -0.5, 0.5, 1.0), index=0.0) -> train.TrainState:
  weights = np.random.default_rng(step).normal(size=(64, 64)).astype(np.float32)
  return train.TrainState(
      step=jnp.asarray(step, jnp.int32),
      params={'w': jnp.asarray(weights),
              'conv': {'weight_quantizer': {'levels': jnp.asarray([levels], jnp.float32),
                                            'index': jnp.full((1, 1, 2, 1), index)}}},
      opt_state={'momentum': jnp.arange(10.0) * step}, batch_stats={}, quant_stats={})


_ABSTRACT = jax.eval_shape(lambda: _state(0))


def _saved(workdir, steps=(1, 2), **state_options) -> str:
  workdir = str(workdir)
  with checkpoint.create_manager(workdir, max_to_keep=5) as manager:
    for step in steps:
      checkpoint.save(manager, step, _state(step, **state_options), _CONFIG,
                      train_metrics={'count': step, 'sums': {'loss': 0.5 * step}})
  return workdir


def _restore(workdir, on_corrupt='fallback'):
  with checkpoint.create_manager(workdir, max_to_keep=5) as manager:
    return checkpoint.restore(manager, _ABSTRACT, _CONFIG, on_corrupt=on_corrupt)


def _largest_data_file(workdir, step) -> pathlib.Path:
  files = pathlib.Path(workdir, checkpoint.CHECKPOINT_DIR, str(step), 'state').rglob('d/*')
  return max(files, key=lambda path: path.stat().st_size)


def _steps(workdir) -> list[int]:
  return sorted(int(n) for n in os.listdir(os.path.join(workdir, checkpoint.CHECKPOINT_DIR)))


def test_intact_checkpoint_restores_with_its_train_metrics(tmp_path):
  state, step, train_metrics = _restore(_saved(tmp_path))
  assert step == 2 and train_metrics == {'count': 2, 'sums': {'loss': 1.0}}
  jax.tree.map(np.testing.assert_array_equal, state, _state(2))


def test_flipped_bytes_are_named_and_the_previous_checkpoint_is_used(tmp_path):
  workdir = _saved(tmp_path)
  data = _largest_data_file(workdir, 2)
  raw = bytearray(data.read_bytes())
  raw[len(raw) // 2] ^= 0x10
  data.write_bytes(bytes(raw))
  with pytest.raises(checkpoint.CorruptCheckpointError,
                     match=r'checkpoints/2 (is corrupt|cannot be read).*on_corrupt_checkpoint'):
    _restore(workdir, on_corrupt='stop')
  assert _steps(workdir) == [1, 2]  # 'stop' leaves it in place.
  state, step, train_metrics = _restore(workdir)
  assert step == 1 and train_metrics['count'] == 1
  jax.tree.map(np.testing.assert_array_equal, state, _state(1))
  # Moved aside, not deleted.
  assert _steps(workdir) == [1]
  assert os.listdir(tmp_path / checkpoint.CORRUPT_DIR) == ['2']


def test_arrays_that_differ_from_their_digest_are_named(tmp_path, monkeypatch):
  real_digest = checkpoint.digest

  def digest_of_other_momentum(state_dict):
    return {**real_digest(state_dict), 'opt_state/momentum': 'f' * 64}

  monkeypatch.setattr(checkpoint, 'digest', digest_of_other_momentum)
  workdir = _saved(tmp_path, steps=(1,))
  monkeypatch.setattr(checkpoint, 'digest', real_digest)
  with pytest.raises(checkpoint.CorruptCheckpointError,
                     match=r'checkpoints/1 is corrupt: 1 array\(s\) differ from what was saved '
                           r'\(opt_state/momentum\)'):
    _restore(workdir, on_corrupt='stop')


def test_truncated_file_is_named_and_without_a_good_one_nothing_moves(tmp_path):
  workdir = _saved(tmp_path, steps=(1,))
  data = _largest_data_file(workdir, 1)
  data.write_bytes(data.read_bytes()[:100])
  with pytest.raises(checkpoint.CorruptCheckpointError) as error:
    _restore(workdir)
  message = str(error.value)
  assert 'No checkpoint' in message and 'checkpoints/1 cannot be read' in message
  assert len(message.splitlines()) < 5  # One line per checkpoint, no TensorStore traceback.
  assert _steps(workdir) == [1] and not (tmp_path / checkpoint.CORRUPT_DIR).exists()


def test_only_the_leftovers_of_a_failed_read_are_silenced(monkeypatch):
  reported = []
  monkeypatch.setattr(sys, 'unraisablehook', reported.append)
  checkpoint._silence_leftovers_of_failed_reads()  # pylint: disable=protected-access
  checkpoint._silence_leftovers_of_failed_reads()  # Installed once: wraps no second time.

  def unraisable(error):
    return types.SimpleNamespace(exc_value=error, exc_type=type(error), object=None)

  sys.unraisablehook(unraisable(RuntimeError('Event loop is closed')))
  sys.unraisablehook(unraisable(Exception('Encountered error while reading array index: ()')))
  other = unraisable(RuntimeError('something else'))
  sys.unraisablehook(other)
  assert reported == [other]


def test_asyncio_reports_of_a_failed_reads_leftovers_are_silenced(caplog):
  checkpoint._silence_leftovers_of_failed_reads()  # pylint: disable=protected-access
  checkpoint._silence_leftovers_of_failed_reads()  # Installed once.
  asyncio_logger = logging.getLogger('asyncio')
  assert sum(isinstance(f, checkpoint._DropFailedReadLeftovers)  # pylint: disable=protected-access
             for f in asyncio_logger.filters) == 1
  leftover = Exception('Encountered error while reading array index: (slice(0, 8, 1),)')
  other = ValueError('a real failure')
  with caplog.at_level(logging.ERROR, logger='asyncio'):
    for error in (leftover, other):
      asyncio_logger.error('Task exception was never retrieved',
                           exc_info=(type(error), error, None))
  assert [record.exc_info[1] for record in caplog.records] == [other]


@pytest.mark.parametrize('state_options, named', [
    ({'levels': (-1.0, 0.5, -0.5, 1.0)}, 'DQ levels at conv/weight_quantizer are not strictly'),
    ({'index': 1e6},
     r'DQ index at conv/weight_quantizer leaves its domain .*range \[1e\+06, 1e\+06\]'),
])
def test_malformed_dq_parameters_are_refused_by_name(tmp_path, state_options, named):
  workdir = _saved(tmp_path, steps=(1,), **state_options)
  with pytest.raises(checkpoint.CorruptCheckpointError, match='malformed parameters: ' + named):
    _restore(workdir, on_corrupt='stop')


def test_restore_state_dict_verifies_the_digest(tmp_path, monkeypatch):
  real_digest = checkpoint.digest
  monkeypatch.setattr(checkpoint, 'digest',
                      lambda state_dict: {**real_digest(state_dict), 'params/w': '0' * 64})
  workdir = _saved(tmp_path, steps=(1,))
  monkeypatch.setattr(checkpoint, 'digest', real_digest)
  with pytest.raises(checkpoint.CorruptCheckpointError, match=r'\(params/w\)'):
    checkpoint.restore_state_dict(workdir)


def test_edited_train_metrics_are_detected(tmp_path):
  workdir = _saved(tmp_path, steps=(1,))
  saved = pathlib.Path(workdir, checkpoint.CHECKPOINT_DIR, '1', 'train_metrics', 'metadata')
  saved.write_text(saved.read_text().replace('"count": 1', '"count": 3'))
  with pytest.raises(checkpoint.CorruptCheckpointError, match=r'\(\(train_metrics\)\)'):
    _restore(workdir, on_corrupt='stop')


def _saved_without_digest(workdir, step: int) -> str:
  # As an older dqnn saved them: the state and the config only.
  with checkpoint.create_manager(str(workdir), max_to_keep=5) as manager:
    manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(serialization.to_state_dict(_state(step))),
        config=ocp.args.JsonSave(_CONFIG.to_dict())))
  return str(workdir)


def test_checkpoint_without_digest_is_refused_unless_trusted(tmp_path):
  workdir = _saved_without_digest(tmp_path, 1)
  with pytest.raises(checkpoint.CorruptCheckpointError,
                     match='has no digest.*trust_checkpoints_without_digest=True'):
    _restore(workdir)
  assert _steps(workdir) == [1] and not (tmp_path / checkpoint.CORRUPT_DIR).exists()
  with checkpoint.create_manager(workdir, max_to_keep=5) as manager:
    state, step, train_metrics = checkpoint.restore(manager, _ABSTRACT, _CONFIG,
                                                    trust_without_digest=True)
  assert step == 1 and train_metrics == {}
  jax.tree.map(np.testing.assert_array_equal, state, _state(1))


def test_a_step_whose_digest_was_removed_is_set_aside_for_the_previous_one(tmp_path):
  # Step 1's files copied over step 2's, digest dropped: restoring it would resume on wrong weights.
  workdir = _saved(tmp_path, steps=(1, 2))
  root = pathlib.Path(workdir, checkpoint.CHECKPOINT_DIR)
  (root / '2' / 'state').rename(tmp_path / 'step2_state')
  shutil.copytree(root / '1' / 'state', root / '2' / 'state')
  shutil.rmtree(root / '2' / 'digest')
  state, step, _ = _restore(workdir)
  assert step == 1
  jax.tree.map(np.testing.assert_array_equal, state, _state(1))
  assert _steps(workdir) == [1] and (tmp_path / checkpoint.CORRUPT_DIR / '2').is_dir()


def test_full_disk_during_a_save_is_one_clear_error(tmp_path, monkeypatch):
  workdir = _saved(tmp_path, steps=(1,))

  def no_space(*args, **kwargs):
    del args, kwargs
    raise ValueError('RESOURCE_EXHAUSTED: Failed to write 2553 bytes to file 7: No space left on '
                     "device [os_error_code='28']")

  manager = checkpoint.create_manager(workdir, max_to_keep=5)
  monkeypatch.setattr(manager, 'save', no_space)
  with pytest.raises(files.DiskFullError, match='saving a checkpoint in .*checkpoints; it was '
                     'not committed and the earlier checkpoints are intact'):
    checkpoint.save(manager, 2, _state(2), _CONFIG)
  # As orbax does, the failed background save is reported once, by the next wait.
  waits, real_wait = [], manager.wait_until_finished

  def wait_failing_once():
    waits.append(1)
    if len(waits) == 1:
      no_space()
    real_wait()

  monkeypatch.setattr(manager, 'wait_until_finished', wait_failing_once)
  with pytest.raises(files.DiskFullError):
    checkpoint.finish(manager)
  assert _steps(workdir) == [1]
