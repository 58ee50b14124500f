"""The prepare tool on slices of the shared data, then a few training steps on its output."""
import json
import subprocess
import sys

import numpy as np

from dqnn import data
from dqnn import train
from train_testlib import REPO, read_metrics, tiny_config


def _prepare(args, env):
  result = subprocess.run([sys.executable, '-m', 'dqnn.data.prepare', *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600, check=False)
  assert result.returncode == 0, result.stderr[-3000:]


def _train_and_check(config, workdir):
  final = train.train_and_evaluate(config, str(workdir))
  assert final['step'] == 4
  assert [r['step'] for r in read_metrics(workdir) if r['split'] == 'eval'] == [4]
  assert 0 <= final['eval/top1'] <= final['eval/top5'] <= 1


def test_cifar_slice(cifar100_npz, tmp_path, subprocess_env):
  data_dir = str(tmp_path / 'tfds')
  _prepare(['--source=npz', f'--input={cifar100_npz}', f'--data_dir={data_dir}',
            '--limit_per_class=2', '--holdout_per_class=1'], subprocess_env)
  info = data.get_dataset_info('cifar100', data_dir)
  assert (info.num_train, info.num_eval) == (100, 100)
  _train_and_check(tiny_config(data_dir=data_dir), tmp_path / 'workdir')


def test_imagenet_sample(imagenet_sample, tmp_path, subprocess_env):
  data_dir = str(tmp_path / 'tfds')
  _prepare(['--source=image_folder', f'--input={imagenet_sample}', f'--data_dir={data_dir}',
            '--limit=20'], subprocess_env)
  info = data.get_dataset_info('imagenet2012', data_dir)
  assert (info.num_train, info.num_eval) == (16, 4)
  # 16 examples at batch 8: the 4 steps cross an epoch boundary.
  _train_and_check(tiny_config('imagenet2012', data_dir=data_dir), tmp_path / 'workdir')


def test_cifar10_from_npz_with_its_runlocal_config(tmp_path, subprocess_env):
  # 10 classes x 6 images; the prepare carves 1 per class into 'test'.
  rng = np.random.default_rng(0)
  npz = tmp_path / 'cifar10.npz'
  np.savez(npz, image=rng.integers(0, 256, (60, 32, 32, 3), dtype=np.uint8),
           label=np.repeat(np.arange(10), 6))
  data_dir = str(tmp_path / 'tfds')
  _prepare(['--source=npz', '--dataset=cifar10', f'--input={npz}', f'--data_dir={data_dir}',
            '--holdout_per_class=1'], subprocess_env)
  info = data.get_dataset_info('cifar10', data_dir)
  assert (info.num_classes, info.num_train, info.num_eval) == (10, 50, 10)

  workdir = tmp_path / 'workdir'
  result = subprocess.run(
      [sys.executable, '-m', 'dqnn.main', '--config=configs/cifar10_resnet20_w2a2.py:runlocal',
       f'--workdir={workdir}', '--config.dataset=cifar10', f'--config.data_dir={data_dir}',
       '--config.download=False', '--config.num_train_steps=2', '--config.eval_batch_size=10'],
      cwd=REPO, env=subprocess_env, capture_output=True, text=True, timeout=600, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  assert [r['step'] for r in read_metrics(workdir) if r['split'] == 'eval'] == [2]
  assert json.loads((workdir / 'config.json').read_text())['dataset'] == 'cifar10'
