"""Training with a teacher (`config.distill`): trains, resumes exactly, refuses a wrong teacher."""
import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

from dqnn import distill
from dqnn import run_config
from dqnn import train
import sharded_train
from train_testlib import (patch_train_batches, read_metrics, restore_raw_state,
                           sigterm_in_step, tiny_config)

# One worker runs the module, so its module-scoped training runs once (pytest.ini: loadgroup).
pytestmark = pytest.mark.xdist_group('distill_training')


@pytest.fixture(scope='session')
def teacher_dir(cifar_data_dir, tmp_path_factory) -> str:
  """A finished 2-step float run of the tiny model: the teacher."""
  workdir = str(tmp_path_factory.mktemp('teacher'))
  train.train_and_evaluate(tiny_config(data_dir=cifar_data_dir, w_bits=32, a_bits=32,
                                       num_train_steps=2), workdir)
  return workdir


def _student(data_dir, teacher, **fields):
  config = tiny_config(data_dir=data_dir, log_every_steps=3, **fields)
  config.distill.update(teacher_workdir=teacher, temperature=2.0, weight=0.5)
  return config


def _without_timing(records):
  return [{k: v for k, v in r.items() if k != 'steps_per_sec'} for r in records]


def test_a_student_trains_with_its_teacher_and_resumes_as_a_straight_run(
    cifar_data_dir, teacher_dir, tmp_path, monkeypatch):
  config = _student(cifar_data_dir, teacher_dir)
  straight, resumed = str(tmp_path / 'straight'), str(tmp_path / 'resumed')
  final = train.train_and_evaluate(config, straight)
  assert final['step'] == 4
  assert np.isfinite(final['train/distill_loss']) and 0 <= final['train/teacher_top1'] <= 1
  record = json.loads((tmp_path / 'straight' / distill.TEACHER_FILE).read_text())
  assert record['workdir'] == teacher_dir and record['step'] == 2

  with monkeypatch.context() as patch:
    patch_train_batches(patch, sigterm_in_step(1))
    assert train.train_and_evaluate(config, resumed)['step'] == 2
  assert train.train_and_evaluate(config, resumed)['step'] == 4
  assert _without_timing(read_metrics(resumed)) == _without_timing(read_metrics(straight))
  jax.tree.map(np.testing.assert_array_equal, restore_raw_state(resumed, 4),
               restore_raw_state(straight, 4))
  # The teacher is re-read from its workdir, never saved with the student.
  assert 'teacher' not in str(jax.tree_util.tree_structure(restore_raw_state(resumed, 4)))


def test_a_teacher_for_other_classes_is_an_error_before_training(cifar_data_dir, tmp_path):
  other = str(tmp_path / 'ten_classes')
  train.train_and_evaluate(tiny_config('fake', w_bits=32, a_bits=32, num_classes=10,
                                       image_size=32, num_train_steps=1), other)
  student = str(tmp_path / 'student')
  with pytest.raises(run_config.ConfigError, match='has 10 classes at 32x32, this run 100'):
    train.train_and_evaluate(_student(cifar_data_dir, other), student)
  assert not os.path.exists(os.path.join(student, run_config.CONFIG_FILE))


def test_a_resume_against_a_retrained_teacher_is_refused_unless_allowed(tmp_path):
  def teacher(step, digest):
    return distill.Teacher(workdir='float_run', model=None, variables={}, step=step,
                           digest=digest)

  distill.check_and_record(teacher(2, 'a' * 64), str(tmp_path), resuming=False,
                           allow_change=False, write=True)
  distill.check_and_record(teacher(2, 'a' * 64), str(tmp_path), resuming=True,
                           allow_change=False, write=True)
  with pytest.raises(run_config.ConfigChangedError, match='teacher is now at step 3'):
    distill.check_and_record(teacher(3, 'b' * 64), str(tmp_path), resuming=True,
                             allow_change=False, write=True)
  distill.check_and_record(teacher(3, 'b' * 64), str(tmp_path), resuming=True,
                           allow_change=True, write=True)
  assert json.loads((tmp_path / distill.TEACHER_FILE).read_text())['step'] == 3


def test_two_devices_distil_like_one(cifar_data_dir, teacher_dir, tmp_path, subprocess_env):
  one, two = str(tmp_path / 'one'), str(tmp_path / 'two')
  train.train_and_evaluate(sharded_train.config(cifar_data_dir, teacher_dir), one)
  env = {**subprocess_env, 'XLA_FLAGS': '--xla_force_host_platform_device_count=2'}
  result = subprocess.run([sys.executable, str(pathlib.Path(sharded_train.__file__)),
                           cifar_data_dir, two, teacher_dir], env=env, capture_output=True,
                          text=True, timeout=600, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'trained on 2 devices' in result.stdout
  # Up to the first checkpoint (as in test_sharded_training): equal to float precision.
  for a, b in zip(read_metrics(one), read_metrics(two)):
    if a['step'] <= 2:
      for name in a.keys() - {'split', 'step', 'steps_per_sec'}:
        assert a[name] == pytest.approx(b[name], rel=1e-4, abs=1e-6), (a['step'], name)
