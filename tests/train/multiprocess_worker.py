"""One process of a test run: `multiprocess_worker.py WORKDIR DATA_DIR SCENARIO...`.

test_multiprocess.py starts it once per process, with JAX_COORDINATOR_ADDRESS,
JAX_NUM_PROCESSES and JAX_PROCESS_ID in the environment (none for a single-process reference)
and the device count in XLA_FLAGS. Each scenario trains the tiny CIFAR config in
WORKDIR/<scenario> on batches that depend only on the step, each process taking its slice, so
any process and device count sees the same global batches. Prints one line per scenario.
"""
import os
import signal
import sys

import jax
import numpy as np

from dqnn import distributed
from dqnn import run_builder
from dqnn import train
from dqnn.data.train_input import global_batch
from train_testlib import tiny_config

GLOBAL_BATCH = 8


class _Interrupted(Exception):
  pass


class _StepBatches:
  """A training input of step-determined global batches; each process hands over its slice."""

  make_batch = staticmethod(lambda inputs: inputs)

  def __init__(self, config, info, mesh, on_step=None):
    self._config, self._info, self._on_step = config, info, on_step
    self._sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('data'))
    self._step = 0
    self.steps_per_epoch = 1000

  def next(self):
    config, info, step = self._config, self._info, self._step
    self._step += 1
    local = config.global_batch_size // jax.process_count()
    start = local * jax.process_index()
    rng = np.random.default_rng(step)
    images = rng.integers(0, 256, (config.global_batch_size, info.image_size, info.image_size, 3),
                          dtype=np.uint8)
    labels = rng.integers(0, info.num_classes, config.global_batch_size, dtype=np.int32)
    if self._on_step:
      self._on_step(step)
    return global_batch({'image': images[start:start + local],
                         'label': labels[start:start + local]}, self._sharding)

  def get_state(self):
    return {'next_index': self._step}

  def set_state(self, state):
    self._step = state['next_index']


def _with_batches(on_step=None):
  run_builder.training_input = lambda config, info, mesh: _StepBatches(config, info, mesh, on_step)


def _config(data_dir, bits, evaluate=False):
  """The tiny config; `evaluate`: at the end, on the mock CIFAR test split, in batches of 6
  rounded to the device count. Otherwise no eval split ('fake' dataset), which saves time."""
  if evaluate:
    return tiny_config(data_dir=data_dir, w_bits=bits, a_bits=bits, eval_batch_size=6,
                       global_batch_size=GLOBAL_BATCH)
  return tiny_config('fake', w_bits=bits, a_bits=bits, num_classes=10, image_size=32,
                     global_batch_size=GLOBAL_BATCH)


def float_run(workdir, data_dir):
  _with_batches()
  return train.train_and_evaluate(_config(data_dir, 32, evaluate=True), workdir)


def quant_run(workdir, data_dir):
  _with_batches()
  return train.train_and_evaluate(_config(data_dir, 2), workdir)


def quant_interrupted_then_resumed(workdir, data_dir):
  """Stops every process at step 3's batch (after step 2's checkpoint), then resumes."""

  def stop(step):
    if step == 2:
      raise _Interrupted

  _with_batches(stop)
  try:
    train.train_and_evaluate(_config(data_dir, 2), workdir)
    raise AssertionError('not interrupted')
  except _Interrupted:
    pass
  return quant_run(workdir, data_dir)


def unshared_workdir(workdir, data_dir):
  """Every process gets its own workdir: the start-up check must refuse it."""
  _with_batches()
  try:
    train.train_and_evaluate(_config(data_dir, 32), f'{workdir}/{jax.process_index()}')
  except distributed.SetupError as error:
    return {'error': str(error)}
  raise AssertionError('an unshared workdir was accepted')


def sigterm_to_last_process(workdir, data_dir):
  """SIGTERM reaches only the last process, in step 2: all must stop at one step and save."""
  config = _config(data_dir, 32)
  config.num_train_steps = 8  # Leaves the processes time to agree on a step to stop at.

  def signal_last_process(step):
    if step == 1 and jax.process_index() == jax.process_count() - 1:
      os.kill(os.getpid(), signal.SIGTERM)

  _with_batches(signal_last_process)
  return train.train_and_evaluate(config, workdir)


PEER_DEATH_EXIT_CODE = 3


def peer_dies(workdir, data_dir):
  """The last process dies in step 2 (no clean-up, as if killed): the others must end fast."""

  def die(step):
    if step == 1 and jax.process_index() == jax.process_count() - 1:
      os._exit(PEER_DEATH_EXIT_CODE)  # pylint: disable=protected-access

  _with_batches(die)
  return train.train_and_evaluate(_config(data_dir, 32), workdir)


SCENARIOS = {f.__name__: f for f in (float_run, quant_run, quant_interrupted_then_resumed,
                                     unshared_workdir, sigterm_to_last_process, peer_dies)}


def main():
  workdir, data_dir, *scenarios = sys.argv[1:]
  distributed.initialize(distributed.Settings.resolve(), multi_host=False)
  with distributed.failing_fast():
    for scenario in scenarios:
      result = SCENARIOS[scenario](os.path.join(workdir, scenario), data_dir)
      print(f'{scenario} process {jax.process_index()}/{jax.process_count()} devices '
            f'{jax.local_device_count()}/{jax.device_count()}: {result}', flush=True)


if __name__ == '__main__':
  main()
