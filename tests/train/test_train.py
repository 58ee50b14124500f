"""End-to-end `train_and_evaluate` on mock CIFAR-100 and ImageNet, and on fake data."""
import json
import math
import os
import signal

import numpy as np
import pytest

from dqnn import checkpoint
from dqnn import train
from train_testlib import read_metrics, tiny_config


def _check_run(workdir, final, *, expect_eval=True):
  records = read_metrics(workdir)
  train_records = [r for r in records if r['split'] == 'train']
  assert [r['step'] for r in train_records] == [1, 2, 3, 4]
  for record in records:
    assert all(math.isfinite(v) for k, v in record.items() if k != 'split'), record
  assert {'loss', 'top1', 'learning_rate', 'learning_rate/levels', 'steps_per_sec'} <= set(
      train_records[-1])
  assert train_records[0]['learning_rate'] > train_records[-1]['learning_rate']  # Cosine decay.
  eval_records = [r for r in records if r['split'] == 'eval']
  if expect_eval:
    assert [r['step'] for r in eval_records] == [4]
    assert 0 <= eval_records[0]['top1'] <= eval_records[0]['top5'] <= 1
    # The tiny model's quantized layers report their activation error.
    assert any(k.startswith('act_error/') for k in eval_records[0])
    assert final['eval/loss'] == eval_records[0]['loss']
  else:
    assert not eval_records
  assert final['step'] == 4
  with open(os.path.join(workdir, 'config.json')) as f:
    assert json.load(f)['global_batch_size'] == 8
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['2', '4']
  # TensorBoard event files, written by clu.
  assert any(name.startswith('events.out') for name in os.listdir(workdir))


def test_cifar_w2a2_trains_evaluates_and_checkpoints(cifar_data_dir, tmp_path):
  config = tiny_config('cifar100', data_dir=cifar_data_dir)
  final = train.train_and_evaluate(config, str(tmp_path))
  _check_run(str(tmp_path), final)


def test_imagenet_w2a2_trains_evaluates_and_checkpoints(imagenet_data_dir, tmp_path):
  config = tiny_config('imagenet2012', data_dir=imagenet_data_dir)
  assert (config.dtype, config.label_smoothing) == ('bfloat16', 0.1)
  final = train.train_and_evaluate(config, str(tmp_path))
  _check_run(str(tmp_path), final)


def test_bn_reestimation_after_the_last_step(cifar_data_dir, tmp_path):
  plain = train.train_and_evaluate(tiny_config('cifar100', data_dir=cifar_data_dir),
                                   str(tmp_path / 'plain'))
  config = tiny_config('cifar100', data_dir=cifar_data_dir, bn_reestimation_batches=2)
  final = train.train_and_evaluate(config, str(tmp_path / 'reestimated'))
  records = read_metrics(str(tmp_path / 'reestimated'))
  before = [r for r in records if r['split'] == train.BEFORE_BN_REESTIMATION]
  after = [r for r in records if r['split'] == 'eval']
  assert [r['step'] for r in before] == [r['step'] for r in after] == [4]
  # Training is the same; only the final statistics, hence the final eval, change.
  assert before[0]['loss'] == pytest.approx(plain['eval/loss'], rel=1e-6)
  assert after[0]['loss'] != before[0]['loss']
  assert final['eval/loss'] == after[0]['loss']
  saved = checkpoint.restore_variables(str(tmp_path / 'reestimated'))
  reference = checkpoint.restore_variables(str(tmp_path / 'plain'))
  np.testing.assert_array_equal(saved['params']['head']['kernel'],
                                reference['params']['head']['kernel'])
  assert not np.allclose(saved['batch_stats']['stem_bn']['var'],
                         reference['batch_stats']['stem_bn']['var'])


def test_fake_data_needs_no_dataset(tmp_path):
  config = tiny_config('fake', num_classes=100, image_size=32)
  final = train.train_and_evaluate(config, str(tmp_path))
  _check_run(str(tmp_path), final, expect_eval=False)


def test_batch_must_divide_over_devices(cifar_data_dir, tmp_path, monkeypatch):
  # The run's mesh is built from jax.devices(): three entries make a 3-device mesh here.
  device = train.jax.devices()[0]
  monkeypatch.setattr(train.jax, 'devices', lambda: [device] * 3)
  workdir = tmp_path / 'workdir'
  with pytest.raises(ValueError, match=r'global_batch_size=8 does not split evenly over 3 '
                                       r'devices; use a multiple of 3 \(e.g. 6 or 9\)'):
    train.train_and_evaluate(tiny_config(data_dir=cifar_data_dir), str(workdir))
  assert not workdir.exists()


def test_ctrl_c_asks_for_a_save_and_a_second_one_exits_at_once(monkeypatch, capfd):
  exits = []
  monkeypatch.setattr(os, '_exit', exits.append)
  previous = signal.getsignal(signal.SIGINT)
  with train._Preemption(manager=None) as preemption:  # pylint: disable=protected-access
    assert not preemption.reached(1)
    os.kill(os.getpid(), signal.SIGINT)
    assert preemption.reached(1) and not exits
    os.kill(os.getpid(), signal.SIGTERM)  # Already stopping: no second message, no exit.
    assert not exits
    os.kill(os.getpid(), signal.SIGINT)
    assert exits == [128 + signal.SIGINT]
  assert signal.getsignal(signal.SIGINT) is previous
  stderr = capfd.readouterr().err
  assert stderr.count('saving a checkpoint after this step') == 1
  assert 'Interrupted again: exiting now' in stderr
