r"""Trains and evaluates a dqnn model.

  python -m dqnn.main --config=configs/cifar100_resnet20_w2a2.py --workdir=/tmp/dqnn/r20_w2a2
  python -m dqnn.main --config=configs/cifar100_resnet20_w2a2.py:runlocal --workdir=/tmp/x \
      --config.data_dir=/data/tfds

Run it from the repository root (config files import `configs.base`). Re-running with the same
--workdir resumes from its latest checkpoint.

Several processes (TPU pod slices, multi-node GPU; see launch/README.md) run the same command
with --config.multi_host=True (settings auto-detected on Cloud TPU, SLURM, Open MPI) or with
--coordinator_address, --num_processes, --process_id (or JAX_COORDINATOR_ADDRESS,
JAX_NUM_PROCESSES, JAX_PROCESS_ID), and a --workdir shared by all of them.

Exit status: 0 when training finished, 75 (EX_TEMPFAIL: try again) when SIGTERM or Ctrl-C
stopped it after saving a checkpoint, so that a scheduler can requeue it; 130 when a second Ctrl-C
ended it at once (the last committed checkpoint is kept); 1 with one `ERROR:` line for a problem
to fix first.
"""
import contextlib
import sys
import time

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from dqnn import checkpoint
from dqnn import config_flag
from dqnn import console
from dqnn import data
from dqnn import distributed
from dqnn import files
from dqnn import run_config
from dqnn import runs
from dqnn import train
from dqnn import warm_start
from dqnn import workdir_lock

# sysexits.h's EX_TEMPFAIL: stopped by SIGTERM or Ctrl-C after saving; re-running resumes.
PREEMPTED_EXIT_CODE = 75
# Errors whose message says what to do; shown without a traceback.
_USER_ERRORS = (data.DatasetNotFoundError, data.DatasetDamagedError,
                checkpoint.CheckpointMismatchError, checkpoint.CorruptCheckpointError,
                run_config.ConfigError,
                run_config.ConfigChangedError, files.DiskFullError, train.NonFiniteError,
                warm_start.WarmStartError, distributed.SetupError,
                workdir_lock.WorkdirInUseError)

_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for checkpoints and metrics.')
_LIBRARY_LOGS = flags.DEFINE_bool(
    'library_logs', False, "Show the INFO logs of orbax, jax and other libraries (dqnn's own "
    'INFO logs and every warning are always shown).')
config_flags.DEFINE_config_file('config', None, 'Experiment config file.', lock_config=True)
flags.mark_flags_as_required(['config', 'workdir'])
# Multi-process settings; each defaults to its environment variable (distributed.ENV_VARS).
_COORDINATOR_ADDRESS = flags.DEFINE_string(
    'coordinator_address', None, 'HOST:PORT where process 0 serves the coordinator; the same '
    'for every process. Setting any of these four starts a multi-process run.')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'Number of processes in the run.')
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'This process: 0 .. num_processes - 1.')
_LOCAL_DEVICE_IDS = flags.DEFINE_string(
    'local_device_ids', None, "Comma-separated GPU numbers this process drives, or 'all'. "
    "Default: all, or under SLURM / Open MPI with several processes per node, the one numbered "
    'by the local rank.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError('Too many command-line arguments.')
  config = flags.FLAGS.config
  if not _LIBRARY_LOGS.value:
    console.hide_library_info_logs()
  with distributed.failing_fast():
    try:
      # Before any other JAX call.
      settings = distributed.Settings.resolve(
          coordinator_address=_COORDINATOR_ADDRESS.value, num_processes=_NUM_PROCESSES.value,
          process_id=_PROCESS_ID.value, local_device_ids=_LOCAL_DEVICE_IDS.value)
      distributed.initialize(settings, multi_host=config.multi_host)
      logging.info(distributed.describe())
      is_main = jax.process_index() == 0
      started = time.monotonic()
      with workdir_lock.hold(_WORKDIR.value) if is_main else contextlib.nullcontext():
        final = train.train_and_evaluate(config, _WORKDIR.value)
    except _USER_ERRORS as error:
      # Every process of a run meets these at the same point, so all exit together.
      raise SystemExit(f'ERROR: {error}') from None
  if is_main:
    print(console.closing_summary(final, runs.read_metrics(_WORKDIR.value), _WORKDIR.value,
                                  time.monotonic() - started), flush=True)
  if final['preempted']:
    raise SystemExit(PREEMPTED_EXIT_CODE)


if __name__ == '__main__':
  try:
    config_flag.check(sys.argv[1:])
  except config_flag.ConfigFlagError as error:
    raise SystemExit(f'ERROR: {error}') from None
  app.run(main)
