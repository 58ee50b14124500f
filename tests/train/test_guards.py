"""Clear errors that leave checkpoints intact: NaN, checkpoint mismatch, missing dataset."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dqnn import checkpoint
from dqnn import data
from dqnn import train
from faults_testlib import snapshot
from train_testlib import (checkpoint_steps, patch_train_batches, read_metrics,
                           restore_raw_state, tiny_config)


def test_nan_stops_with_the_step_and_keeps_the_last_good_checkpoint(cifar_data_dir, tmp_path,
                                                                   monkeypatch):
  config = tiny_config(data_dir=cifar_data_dir)
  workdir = str(tmp_path)

  def nan_in_step_3(index, batch):
    if index == 2:
      batch = {**batch, 'image': jnp.full(batch['image'].shape, jnp.nan)}
    return batch

  with monkeypatch.context() as patch:
    patch_train_batches(patch, nan_in_step_3)
    with pytest.raises(train.NonFiniteError, match='at step 3'):
      train.train_and_evaluate(config, workdir)
  assert checkpoint_steps(workdir) == [2]
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(restore_raw_state(workdir, 2)))
  assert max(r['step'] for r in read_metrics(workdir)) == 2
  # The good checkpoint resumes: with clean data the run finishes.
  assert train.train_and_evaluate(config, workdir)['step'] == 4


@pytest.mark.parametrize('change, named', [
    ({'quant.w_bits': 3}, 'quant.w_bits: checkpoint 2, this run 3'),
    ({'model': '_alexnet_tiny'},
     "model: checkpoint '_cifar_resnet_tiny', this run '_alexnet_tiny'"),
])
def test_mismatched_resume_names_the_difference_and_touches_nothing(
    cifar_data_dir, tmp_path, change, named):
  workdir = str(tmp_path)
  train.train_and_evaluate(tiny_config(data_dir=cifar_data_dir), workdir)
  before = snapshot(workdir)
  config = tiny_config(data_dir=cifar_data_dir, num_train_steps=8)
  for field, value in change.items():
    section, _, name = field.rpartition('.')
    (config[section] if section else config)[name] = value
  with pytest.raises(checkpoint.CheckpointMismatchError) as error:
    train.train_and_evaluate(config, workdir)
  assert named in str(error.value)
  assert 'Differing arrays' in str(error.value) and 'left untouched' in str(error.value)
  assert snapshot(workdir) == before


def test_missing_dataset_is_one_clear_error_before_any_write(tmp_path):
  workdir = tmp_path / 'workdir'
  config = tiny_config(data_dir=str(tmp_path / 'no_data'))
  with pytest.raises(data.DatasetNotFoundError, match='python -m dqnn.data.prepare'):
    train.train_and_evaluate(config, str(workdir))
  assert not workdir.exists()
