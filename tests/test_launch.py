"""The launch/ scripts build the right per-process commands (ssh, srun, gcloud, python faked)."""
import os
import pathlib
import shlex
import subprocess

from absl import flags

from dqnn import main  # pylint: disable=unused-import  (defines the flags checked below)

ROOT = pathlib.Path(__file__).resolve().parents[1]
LAUNCH = ROOT / 'launch'
ARGS = ['--config=configs/imagenet_resnet50_w2a2.py', '--workdir=/shared/runs/with space']


def _fake_tools(tmp_path) -> dict[str, str]:
  """An environment whose python/srun/gcloud print their arguments, one per line, and whose ssh
  runs the remote command locally (so ssh_nodes.sh -> multi_node_gpu.sh runs for real)."""
  bin_dir = tmp_path / 'bin'
  bin_dir.mkdir()
  for tool in ('python', 'srun', 'gcloud'):
    (bin_dir / tool).write_text(
        f'#!/usr/bin/env bash\necho "{tool} $PWD"; printf "%s\\n" "$@"; echo ---\n')
  (bin_dir / 'ssh').write_text('#!/usr/bin/env bash\nshift 2\nexec bash -c "$1"\n')
  for tool in bin_dir.iterdir():
    tool.chmod(0o755)
  venv = tmp_path / 'venv'
  (venv / 'bin').mkdir(parents=True)
  (venv / 'bin' / 'activate').write_text('')
  return {'PATH': f'{bin_dir}:{os.environ["PATH"]}', 'VENV': str(venv), 'HOME': str(tmp_path)}


def _run(script, args, env) -> str:
  result = subprocess.run([str(LAUNCH / script), *args], env=env, capture_output=True,
                          text=True, timeout=60, check=False)
  assert result.returncode == 0, result.stderr
  return result.stdout


def _calls(output: str) -> list[list[str]]:
  """Each faked command's lines: its name and directory, then one line per argument."""
  return [call.strip('\n').splitlines() for call in output.split('---\n') if call.strip()]


def _assert_main_flags_exist(arguments):
  for argument in arguments:
    name = argument.lstrip('-').split('=')[0]
    if argument.startswith('--') and not name.startswith('config'):
      assert name in flags.FLAGS, name


def test_ssh_nodes_starts_one_process_per_host_with_its_rank(tmp_path):
  output = _run('ssh_nodes.sh', ['node0,node1,node2', *ARGS], _fake_tools(tmp_path))
  for rank, host in enumerate(('node0', 'node1', 'node2')):
    # Each host's lines carry its prefix (hosts' lines may interleave).
    [call] = _calls(''.join(line.removeprefix(f'[{host}] ') for line in
                            output.splitlines(keepends=True) if line.startswith(f'[{host}] ')))
    assert call[0] == f'python {ROOT}'
    assert call[1:3] == ['-m', 'dqnn.main']
    assert call[3:5] == ['--coordinator_address=node0:29500', '--num_processes=3']
    assert call[5] == f'--process_id={rank}'
    assert call[6:] == ['--local_device_ids=all', *ARGS]
    _assert_main_flags_exist(call[3:])


def test_multi_node_gpu_requires_its_environment(tmp_path):
  result = subprocess.run([str(LAUNCH / 'multi_node_gpu.sh'), *ARGS],
                          env={**_fake_tools(tmp_path), 'MASTER_ADDR': 'node0'},
                          capture_output=True, text=True, timeout=60, check=False)
  assert result.returncode != 0 and 'set NNODES' in result.stderr


def test_slurm_script_runs_srun_with_multi_host_from_the_submit_dir(tmp_path):
  env = {**_fake_tools(tmp_path), 'SLURM_SUBMIT_DIR': str(tmp_path)}
  [call] = _calls(_run('slurm_gpu.sh', ARGS, env))
  assert call == [f'srun {tmp_path}', '--kill-on-bad-exit=1', 'python', '-m', 'dqnn.main',
                  '--config.multi_host=True', *ARGS]


def test_tpu_pod_runs_the_same_command_on_every_worker(tmp_path):
  [call] = _calls(_run('tpu_pod.sh', ['my-tpu', 'us-central2-b', *ARGS], _fake_tools(tmp_path)))
  assert call[1:4] == ['compute', 'tpus', 'tpu-vm']
  assert '--worker=all' in call
  command = call[-1].split('python -m dqnn.main', 1)[1]
  assert shlex.split(command) == ['--config.multi_host=True', *ARGS]
