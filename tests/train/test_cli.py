"""The command line: `python -m dqnn.main --config=configs/x.py:runlocal --config.x=y ...`."""
import subprocess
import sys

from train_testlib import REPO, read_metrics


def _main(args, env):
  return subprocess.run([sys.executable, '-m', 'dqnn.main', *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=600, check=False)


def test_runlocal_config_with_overrides_trains(cifar_data_dir, tmp_path, subprocess_env):
  result = _main(['--config=configs/cifar100_resnet20_w2a2.py:runlocal', f'--workdir={tmp_path}',
                  f'--config.data_dir={cifar_data_dir}', '--config.download=False',
                  '--config.eval_batch_size=8'], subprocess_env)
  assert result.returncode == 0, result.stderr[-3000:]
  records = read_metrics(tmp_path)
  assert [r['step'] for r in records if r['split'] == 'train'] == [1, 2, 3, 4]
  assert [r['step'] for r in records if r['split'] == 'eval'] == [4]
  config = (tmp_path / 'config.json').read_text()
  assert '"model": "_cifar_resnet_tiny"' in config and '"eval_batch_size": 8' in config


def test_missing_dataset_is_one_error_without_traceback(tmp_path, subprocess_env):
  workdir = tmp_path / 'workdir'
  result = _main(['--config=configs/cifar100_resnet20_w2a2.py', f'--workdir={workdir}',
                  f'--config.data_dir={tmp_path / "no_data"}', '--config.download=False'],
                 subprocess_env)
  assert result.returncode != 0
  assert 'ERROR: Dataset' in result.stderr
  assert 'python -m dqnn.data.prepare --source=npz' in result.stderr
  assert 'Traceback' not in result.stderr
  assert not workdir.exists()


def test_train_batch_that_does_not_split_over_the_devices_is_one_error(tmp_path, subprocess_env):
  workdir = tmp_path / 'workdir'
  env = {**subprocess_env, 'XLA_FLAGS': '--xla_force_host_platform_device_count=2'}
  result = _main(['--config=configs/fake_data_throughput.py', f'--workdir={workdir}',
                  '--config.global_batch_size=7'], env)
  assert result.returncode != 0
  assert ('ERROR: global_batch_size=7 does not split evenly over 2 devices; use a multiple of '
          '2 (e.g. 6 or 8).') in result.stderr
  assert 'Traceback' not in result.stderr
  assert not workdir.exists()
