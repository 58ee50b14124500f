"""The command line: `python -m dqnn.main --config=configs/x.py:runlocal --config.x=y ...`."""
import os
import signal
import subprocess
import sys
import time

from dqnn import workdir_lock
from train_testlib import REPO, checkpoint_steps, read_metrics


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


def _training_process(workdir, env, steps=100000):
  """A long fake-data run, returned once it has logged its first step."""
  process = subprocess.Popen(
      [sys.executable, '-m', 'dqnn.main', '--config=configs/fake_data_throughput.py:runlocal',
       f'--workdir={workdir}', f'--config.num_train_steps={steps}', '--config.log_every_steps=1'],
      cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  deadline = time.monotonic() + 300
  while not (workdir / 'metrics.jsonl').exists() and time.monotonic() < deadline:
    assert process.poll() is None, process.stderr.read()[-3000:]
    time.sleep(0.5)
  return process


def test_sigterm_saves_and_exits_with_the_requeue_code(tmp_path, subprocess_env):
  """A scheduler tells a preempted run (checkpoint saved; re-run resumes) from a finished one.
  Ctrl-C takes the same path (tests/train/test_train.py tests its handler)."""
  signum = signal.SIGTERM
  process = _training_process(tmp_path, subprocess_env)
  process.send_signal(signum)
  _, stderr = process.communicate(timeout=300)
  assert process.returncode == 75, stderr[-3000:]  # dqnn.main.PREEMPTED_EXIT_CODE
  assert f'{signal.Signals(signum).name}: saving a checkpoint after this step' in stderr
  assert 'Saved a checkpoint at step' in stderr and 'Traceback' not in stderr
  assert checkpoint_steps(tmp_path)


def test_a_second_run_on_a_workdir_in_use_is_refused_and_changes_nothing(
    cifar_data_dir, tmp_path, subprocess_env):
  (tmp_path / 'config.json').write_text('{"optimizer": {"learning_rate": 0.1}}')
  with workdir_lock.hold(str(tmp_path)):
    result = _main(['--config=configs/cifar100_resnet20_w2a2.py:runlocal',
                    f'--workdir={tmp_path}', f'--config.data_dir={cifar_data_dir}',
                    '--config.download=False', '--config.optimizer.learning_rate=0.5'],
                   subprocess_env)
  assert result.returncode == 1
  assert f'is training in --workdir={tmp_path}' in result.stderr, result.stderr[-3000:]
  assert 'Traceback' not in result.stderr
  assert sorted(os.listdir(tmp_path)) == ['.dqnn_lock', 'config.json']
  assert '0.1' in (tmp_path / 'config.json').read_text()


def test_a_misplaced_override_is_one_line_naming_the_field(tmp_path, subprocess_env):
  result = _main(['--config=configs/cifar100_resnet20_w2a2.py', f'--workdir={tmp_path / "w"}',
                  '--config.w_bits=2'], subprocess_env)
  assert result.returncode == 1
  assert result.stderr.strip().splitlines() == [
      "ERROR: --config.w_bits: configs/cifar100_resnet20_w2a2.py has no field 'w_bits'. "
      'Did you mean --config.quant.w_bits?']


def test_a_fallback_to_the_previous_checkpoint_ends_cleanly(tmp_path, subprocess_env):
  command = [sys.executable, '-m', 'dqnn.main',
             '--config=configs/fake_data_throughput.py:runlocal', f'--workdir={tmp_path}',
             '--config.checkpoint_every_steps=2']
  first = subprocess.run(command, cwd=REPO, env=subprocess_env, capture_output=True, text=True,
                         timeout=300)
  assert first.returncode == 0, first.stderr[-3000:]
  latest = checkpoint_steps(tmp_path)[-1]
  data_files = (tmp_path / 'checkpoints' / str(latest) / 'state').rglob('d/*')
  max(data_files, key=lambda path: path.stat().st_size).unlink()
  again = subprocess.run(command, cwd=REPO, env=subprocess_env, capture_output=True, text=True,
                         timeout=300)
  assert again.returncode == 0, again.stderr[-3000:]
  assert 'the latest intact checkpoint' in again.stderr
  assert 'Traceback' not in again.stderr and 'Event loop is closed' not in again.stderr
  assert 'TensorStore details' not in again.stderr  # The error is cut to its useful part.
  assert checkpoint_steps(tmp_path)[-1] == latest
