"""Several JAX processes on this machine (CPU collectives over localhost) train like one.

Each run starts multiprocess_worker.py once per process; see its scenarios.
"""
import os
import pathlib
import re
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from dqnn import checkpoint
from dqnn import distributed
import multiprocess_worker
from train_testlib import checkpoint_steps, read_metrics, restore_raw_state

# One worker runs the module, so its module-scoped training runs once (pytest.ini: loadgroup).
pytestmark = pytest.mark.xdist_group('multiprocess')

WORKER = pathlib.Path(__file__).with_name('multiprocess_worker.py')
TIMEOUT_S = 300


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def _start(num_processes, devices, workdir, data_dir, scenarios, env):
  """Starts the worker as `num_processes` processes of `devices` CPU devices each."""
  # Every run compiles its own programs; XLA's fast mode (the same for all runs) halves that.
  env = {**env, 'XLA_FLAGS': f'--xla_force_host_platform_device_count={devices} '
                             '--xla_backend_optimization_level=0'}
  if num_processes > 1:
    env.update(JAX_COORDINATOR_ADDRESS=f'localhost:{_free_port()}',
               JAX_NUM_PROCESSES=str(num_processes))
  os.makedirs(workdir, exist_ok=True)
  processes = []
  for index in range(num_processes):
    # Files, not pipes: a process blocked on a full pipe would stall its peers' collectives.
    log = open(os.path.join(workdir, f'log.{num_processes}.{index}'), 'w+')
    processes.append((subprocess.Popen(
        [sys.executable, str(WORKER), str(workdir), data_dir, *scenarios],
        env={**env, 'JAX_PROCESS_ID': str(index)} if num_processes > 1 else env, stdout=log, stderr=subprocess.STDOUT,
        text=True), log))
  return processes


def _finish(processes, returncodes=None) -> list[str]:
  """Each process's output, once all exited with `returncodes` (default 0)."""
  outputs = []
  try:
    for process, log in processes:
      process.wait(timeout=TIMEOUT_S)
      log.seek(0)
      outputs.append(log.read())
      log.close()
  finally:
    for process, _ in processes:
      if process.poll() is None:
        process.kill()
  for (process, _), output, expected in zip(processes, outputs,
                                            returncodes or [0] * len(processes)):
    assert process.returncode == expected, output[-4000:]
  return outputs


@pytest.fixture(scope='session')
def runs(tmp_path_factory, cifar_data_dir):
  """Output folders and per-process outputs of three runs made side by side.

  'one': 1 process of 2 devices, the reference. 'two': 2 processes of 1 device, the same
  global batches, where the last process finally dies. 'two_by_two': 2 processes of 2
  devices.
  """
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu'}
  layouts = {'one': (1, 2, ['float_run', 'quant_run']),
             'two': (2, 1, ['float_run', 'quant_interrupted_then_resumed', 'peer_dies']),
             'two_by_two': (2, 2, ['float_run', 'unshared_workdir', 'sigterm_to_last_process'])}
  workdirs = {name: tmp_path_factory.mktemp(name) for name in layouts}
  started = {name: _start(processes, devices, workdirs[name], cifar_data_dir, scenarios, env)
             for name, (processes, devices, scenarios) in layouts.items()}
  # Process 0 of 'two' exits 1 after its peer's death, the peer with its own code.
  returncodes = {'two': [1, multiprocess_worker.PEER_DEATH_EXIT_CODE]}
  return {name: (workdirs[name], _finish(processes, returncodes.get(name)))
          for name, processes in started.items()}


def _differing_leaves(a, b, close) -> list[str]:
  assert jax.tree.structure(a) == jax.tree.structure(b)
  return [jax.tree_util.keystr(path) for path, same in jax.tree_util.tree_leaves_with_path(
      jax.tree.map(close, a, b)) if not same]


def _close(a, b):
  return np.allclose(a, b, rtol=1e-5, atol=1e-6)


def _train_records(workdir) -> list[dict]:
  return [{k: v for k, v in r.items() if k != 'steps_per_sec'}
          for r in read_metrics(workdir) if r['split'] == 'train']


def _assert_close_records(records_a, records_b):
  assert [r['step'] for r in records_a] == [r['step'] for r in records_b]
  for a, b in zip(records_a, records_b):
    for name in a.keys() - {'split', 'step', 'steps_per_sec'}:
      assert a[name] == pytest.approx(b[name], rel=1e-5, abs=1e-7), (a['step'], name)


def test_processes_report_their_place(runs):
  assert 'float_run process 0/1 devices 2/2' in runs['one'][1][0]
  for index, output in enumerate(runs['two'][1]):
    assert f'float_run process {index}/2 devices 1/2' in output
  for index, output in enumerate(runs['two_by_two'][1]):
    assert f'float_run process {index}/2 devices 2/4' in output


def test_float_run_over_two_processes_equals_one_process_bitwise(runs):
  one, two = runs['one'][0] / 'float_run', runs['two'][0] / 'float_run'
  assert _train_records(one) == _train_records(two)
  # Eval sums the same examples, batched differently (each process reads its own slice).
  eval_one, eval_two = read_metrics(one)[-1], read_metrics(two)[-1]
  assert eval_one['split'] == eval_two['split'] == 'eval'
  for name in ('loss', 'top1', 'top5'):
    assert eval_one[name] == pytest.approx(eval_two[name], rel=1e-6)
  for step in (2, 4):
    assert not _differing_leaves(restore_raw_state(one, step), restore_raw_state(two, step),
                                 np.array_equal)


def test_quantized_run_over_two_processes_resumes_and_equals_one_process(runs):
  """Quantizers and k-means levels are fitted to the global first batch, as on one process."""
  one = runs['one'][0] / 'quant_run'
  two = runs['two'][0] / 'quant_interrupted_then_resumed'
  assert checkpoint_steps(one) == checkpoint_steps(two) == [2, 4]
  _assert_close_records(_train_records(one), _train_records(two))
  for step in (2, 4):
    assert not _differing_leaves(restore_raw_state(one, step), restore_raw_state(two, step),
                                 _close)


def test_two_processes_of_two_devices_train_like_one_process(runs):
  """4 devices (eval batch 6 rounded to 4) against 2: equal to float precision."""
  one, four = runs['one'][0] / 'float_run', runs['two_by_two'][0] / 'float_run'
  _assert_close_records(_train_records(one), _train_records(four))
  eval_one, eval_four = read_metrics(one)[-1], read_metrics(four)[-1]
  assert eval_four['split'] == 'eval'
  for name in ('loss', 'top1', 'top5'):
    assert eval_one[name] == pytest.approx(eval_four[name], rel=1e-5)
  assert not _differing_leaves(restore_raw_state(one, 4), restore_raw_state(four, 4), _close)


def test_unshared_workdir_fails_on_every_process(runs):
  workdir, outputs = runs['two_by_two']
  for output in outputs:
    assert 'do not see the file process 0 wrote there' in output, output[-4000:]
    assert 'process(es) 1 do not see' in output
  for index in (0, 1):
    unshared = workdir / 'unshared_workdir' / str(index)
    assert not (unshared / checkpoint.CHECKPOINT_DIR).exists()
    assert not list(unshared.glob('.dqnn_shared*'))


def test_sigterm_on_one_process_stops_all_at_one_step(runs):
  workdir, outputs = runs['two_by_two']
  stopped = {(re.search(r"'step': (\d+)", line)[1], "'preempted': True" in line)
             for output in outputs
             for line in output.splitlines() if line.startswith('sigterm_to_last_process')}
  assert len(stopped) == 1, stopped
  step, preempted = stopped.pop()
  step = int(step)
  assert preempted
  assert step < 8  # The run's length: it stopped early, every process at the same step.
  assert checkpoint_steps(workdir / 'sigterm_to_last_process')[-1] == step
  # Process 0 was not signalled; its message says another process was.
  assert 'reached one of the 2 processes' in outputs[0]
  assert 'Saved a checkpoint at step' not in outputs[0]


def test_death_of_a_process_ends_the_others_fast_with_a_hint(runs):
  survivor = runs['two'][1][0]
  assert 'JaxRuntimeError' in survivor  # The failed collective, with its traceback.
  assert distributed.PEER_FAILURE_HINT in survivor
  # It exited at once rather than waiting for the dead process at the shutdown barrier.
  assert 'Shutdown barrier' not in survivor
