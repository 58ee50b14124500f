r"""Trains and evaluates a dqnn model.

  python -m dqnn.main --config=configs/cifar100_resnet20_w2a2.py --workdir=/tmp/dqnn/r20_w2a2
  python -m dqnn.main --config=configs/cifar100_resnet20_w2a2.py:runlocal --workdir=/tmp/x \
      --config.data_dir=/data/tfds

Run it from the repository root (config files import `configs.base`). Re-running with the same
--workdir resumes from its latest checkpoint.
"""
from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from dqnn import checkpoint
from dqnn import data
from dqnn import files
from dqnn import run_config
from dqnn import train
from dqnn import warm_start

# Errors whose message says what to do; shown without a traceback.
_USER_ERRORS = (data.DatasetNotFoundError, checkpoint.CheckpointMismatchError,
                checkpoint.CorruptCheckpointError, run_config.ConfigError,
                run_config.ConfigChangedError, files.DiskFullError, train.NonFiniteError,
                warm_start.WarmStartError)

_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for checkpoints and metrics.')
config_flags.DEFINE_config_file('config', None, 'Experiment config file.', lock_config=True)
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError('Too many command-line arguments.')
  config = flags.FLAGS.config
  if config.multi_host:
    # Multi-host runs (TPU pods, multi-node GPU) must connect the processes before any JAX use.
    jax.distributed.initialize()
  logging.info('JAX process %d/%d, %d local / %d global devices.', jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count())
  try:
    train.train_and_evaluate(config, _WORKDIR.value)
  except _USER_ERRORS as error:
    raise SystemExit(f'ERROR: {error}') from None


if __name__ == '__main__':
  app.run(main)
