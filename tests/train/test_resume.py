"""Resuming: an interrupted run (SIGTERM, then a crash) ends exactly where a straight run does."""

import jax
import numpy as np
import pytest

from dqnn import train
from train_testlib import (checkpoint_steps, patch_train_batches, read_metrics,
                           restore_raw_state, sigterm_in_step, tiny_config)


def _without_timing(records):
  return [{k: v for k, v in r.items() if k != 'steps_per_sec'} for r in records]


@pytest.mark.parametrize('input_on_device', [False, True])
def test_sigterm_and_crash_then_resume_equal_a_straight_run(cifar_data_dir, tmp_path,
                                                            monkeypatch, input_on_device):
  # 64 examples at batch 8: the interruptions fall mid-epoch, where the input must continue
  # with exactly the next batch. Records at steps 3 and 4: SIGTERM (step 2) and the crash
  # (step 3) fall between records, so the first record after the resume must average the steps
  # before the interruption too.
  config = tiny_config(data_dir=cifar_data_dir, input_on_device=input_on_device,
                       log_every_steps=3)
  straight, resumed = str(tmp_path / 'straight'), str(tmp_path / 'resumed')
  train.train_and_evaluate(config, straight)

  with monkeypatch.context() as patch:
    patch_train_batches(patch, sigterm_in_step(1))
    final = train.train_and_evaluate(config, resumed)
  # SIGTERM finishes the step, saves it and returns instead of killing the process.
  assert final['step'] == 2
  assert checkpoint_steps(resumed) == [2]

  def crash_in_step_3(index, batch):
    if index == 2:
      raise RuntimeError('simulated crash')
    return batch

  with monkeypatch.context() as patch:
    patch_train_batches(patch, crash_in_step_3)
    with pytest.raises(RuntimeError, match='simulated crash'):
      train.train_and_evaluate(config, resumed)
  assert checkpoint_steps(resumed) == [2]

  final = train.train_and_evaluate(config, resumed)
  assert final['step'] == 4
  assert _without_timing(read_metrics(resumed)) == _without_timing(read_metrics(straight))
  jax.tree.map(np.testing.assert_array_equal, restore_raw_state(resumed, 4),
               restore_raw_state(straight, 4))


def test_finished_run_resumes_to_a_no_op(cifar_data_dir, tmp_path):
  config = tiny_config(data_dir=cifar_data_dir)
  train.train_and_evaluate(config, str(tmp_path))
  records = read_metrics(str(tmp_path))
  final = train.train_and_evaluate(config, str(tmp_path))
  assert final['step'] == 4
  assert read_metrics(str(tmp_path)) == records
  assert checkpoint_steps(str(tmp_path)) == [2, 4]
