"""Multi-process settings, batch sizes and the single-process side of the workdir check.

Runs with several processes are in tests/train/test_multiprocess.py.
"""
import jax
from jax._src import clusters
import pytest

from dqnn import distributed

SLURM = {'SLURM_JOB_ID': '12', 'SLURM_STEP_NODELIST': 'node[001-002]', 'SLURM_NTASKS': '2',
         'SLURM_PROCID': '1', 'SLURM_LOCALID': '0', 'SLURM_NODEID': '1'}


def test_flags_override_environment_variables():
  environ = {'JAX_COORDINATOR_ADDRESS': 'node0:1234', 'JAX_NUM_PROCESSES': '4',
             'JAX_PROCESS_ID': '3', 'JAX_LOCAL_DEVICE_IDS': '0,1'}
  assert distributed.Settings.resolve(environ) == distributed.Settings('node0:1234', 4, 3, (0, 1))
  settings = distributed.Settings.resolve(environ, process_id=2, local_device_ids='all')
  assert settings == distributed.Settings('node0:1234', 4, 2, ())
  assert not distributed.Settings.resolve({}).given
  assert distributed.Settings.resolve({'JAX_PROCESS_ID': '0'}).given


@pytest.mark.parametrize('flag, value, expected', [
    ('coordinator_address', 'node0', 'HOST:PORT'),
    ('num_processes', '0', 'a positive integer'),
    ('process_id', 'first', 'an integer'),
    ('local_device_ids', '0,0', 'comma-separated device numbers'),
])
def test_bad_settings_say_what_is_expected(flag, value, expected):
  with pytest.raises(distributed.SetupError, match=f'--{flag}=.*is not {expected}'):
    distributed.Settings.resolve({}, **{flag: value})


@pytest.mark.parametrize('environ, expected', [
    ({}, None),
    # One task per GPU: JAX's default (the GPU numbered SLURM_LOCALID) is right.
    ({**SLURM, 'SLURM_STEP_TASKS_PER_NODE': '4(x2)'}, None),
    # One task per node: every GPU of the node.
    ({**SLURM, 'SLURM_STEP_TASKS_PER_NODE': '1(x2)'}, ()),
    ({**SLURM, 'SLURM_STEP_TASKS_PER_NODE': '4,1'}, ()),  # This is node 1.
    ({**SLURM, 'SLURM_STEP_TASKS_PER_NODE': '1,4'}, None),
    # Bound to one GPU per task by SLURM: it is the only one the process sees.
    ({**SLURM, 'SLURM_STEP_TASKS_PER_NODE': '4(x2)', 'CUDA_VISIBLE_DEVICES': '3'}, ()),
    ({'OMPI_COMM_WORLD_LOCAL_SIZE': '1'}, ()),
    ({'OMPI_COMM_WORLD_LOCAL_SIZE': '8'}, None),
])
def test_cluster_local_device_ids(environ, expected):
  assert distributed.cluster_local_device_ids(environ) == expected


def test_jax_slurm_detection_keeps_every_device_when_told(monkeypatch):
  """`()` reaches JAX as [], which its SLURM detection keeps (not [SLURM_LOCALID])."""
  for name, value in SLURM.items():
    monkeypatch.setenv(name, value)
  detected = clusters.ClusterEnv.auto_detect_unset_distributed_params(
      None, None, None, [], None, None)
  assert detected == ('node001:' + str(12 % 2**12 + 65535 - 2**12 + 1), 2, 1, [])
  # Without it, JAX would drive only GPU SLURM_LOCALID (0) on each node.
  assert clusters.ClusterEnv.auto_detect_unset_distributed_params(
      None, None, None, None, None, None)[3] == [0]


def _record_initialize(monkeypatch, error=None):
  calls = []

  def initialize(**kwargs):
    calls.append(kwargs)
    if error:
      raise error

  monkeypatch.setattr(jax.distributed, 'initialize', initialize)
  return calls


def test_initialize_only_for_multi_process_runs(monkeypatch):
  calls = _record_initialize(monkeypatch)
  assert not distributed.initialize(distributed.Settings(), multi_host=False, environ={})
  assert not calls
  assert distributed.initialize(distributed.Settings(), multi_host=True,
                                environ={'OMPI_COMM_WORLD_LOCAL_SIZE': '1'})
  assert distributed.initialize(distributed.Settings('node0:1234', 2, 1), multi_host=False,
                                environ={})
  assert [(c['coordinator_address'], c['num_processes'], c['process_id'],
           c['local_device_ids']) for c in calls] == [(None, None, None, []),
                                                      ('node0:1234', 2, 1, None)]


def test_initialize_without_settings_or_cluster_says_what_to_set(monkeypatch):
  _record_initialize(monkeypatch, ValueError('coordinator_address should be defined.'))
  with pytest.raises(distributed.SetupError, match='--coordinator_address=HOST:PORT'):
    distributed.initialize(distributed.Settings(), multi_host=True, environ={})


def test_train_batch_size_that_does_not_split_names_ones_that_do():
  distributed.check_train_batch_size(256, 8)
  with pytest.raises(distributed.SetupError,
                     match=r'global_batch_size=100 .* 8 devices; use a multiple of 8 '
                           r'\(e.g. 96 or 104\)'):
    distributed.check_train_batch_size(100, 8)
  with pytest.raises(distributed.SetupError, match=r'\(e.g. 8\)'):
    distributed.check_train_batch_size(4, 8)


def test_eval_batch_size_rounds_to_the_device_count():
  assert distributed.eval_batch_size(500, 4) == 500
  assert distributed.eval_batch_size(500, 8) == 496
  assert distributed.eval_batch_size(100, 128) == 128


def test_single_process_workdir_check(tmp_path):
  workdir = tmp_path / 'new' / 'workdir'
  distributed.check_shared_workdir(str(workdir))
  assert workdir.is_dir() and not list(workdir.iterdir())
  # Unwritable even for root: a path through a file.
  (tmp_path / 'file').write_text('')
  with pytest.raises(distributed.SetupError, match='Cannot write to --workdir=.*file/run'):
    distributed.check_shared_workdir(str(tmp_path / 'file' / 'run'))


def test_process_zero_first_on_one_process_just_runs():
  assert distributed.process_zero_first(lambda: 'prepared', 'to prepare') == 'prepared'
