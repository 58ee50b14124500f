"""Helpers for the training tests: tiny configs and reading the metric log."""
import json
import os
import pathlib
import signal
import sys

REPO = pathlib.Path(__file__).resolve().parents[2]
# pytest.ini puts the repository on the path; the scripts tests start (multiprocess_worker.py,
# sharded_train.py) import `configs.base` through this.
if str(REPO) not in sys.path:
  sys.path.insert(0, str(REPO))

# pylint: disable=g-import-not-at-top,wrong-import-position
from configs import base

from dqnn import checkpoint
from dqnn import run_builder
# pylint: enable=g-import-not-at-top,wrong-import-position

SHARED_DATA = pathlib.Path(
    os.environ.get('DQNN_SHARED_DATA', REPO.parent / 'shared' / 'data'))
TINY_MODELS = {'cifar100': '_cifar_resnet_tiny', 'imagenet2012': '_resnet_tiny',
               'fake': '_cifar_resnet_tiny'}


def tiny_config(dataset: str = 'cifar100', *, w_bits: int = 2, a_bits: int = 2, **fields):
  """A config that trains the tiny test model for 4 steps at batch 8 (checkpoints every 2).

  ImageNet configs also compute in bfloat16 with label smoothing, to exercise both options.
  """
  config = base.get_base_config()
  config.dataset = dataset
  config.model = TINY_MODELS[dataset]
  config.quant.w_bits, config.quant.a_bits = w_bits, a_bits
  config.global_batch_size = 8
  config.eval_batch_size = 8
  config.num_train_steps = 4
  config.log_every_steps = 1
  config.eval_every_steps = 0
  config.checkpoint_every_steps = 2
  if dataset == 'imagenet2012':
    config.dtype, config.label_smoothing = 'bfloat16', 0.1
  config.update(fields)
  return config


def read_metrics(workdir) -> list[dict]:
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [json.loads(line) for line in f]


class _ObservedInput:
  """A training input whose batches pass through `on_batch(step_index, inputs)`."""

  def __init__(self, train_input, on_batch):
    self._input = train_input
    self._on_batch = on_batch
    self._position = 0
    self.make_batch = train_input.make_batch
    self.steps_per_epoch = train_input.steps_per_epoch

  def next(self):
    index, self._position = self._position, self._position + 1
    return self._on_batch(index, self._input.next())

  def get_state(self):
    return self._input.get_state()

  def set_state(self, state):
    self._input.set_state(state)
    self._position = state.get('next_index', state.get('next_step', 0))


def patch_train_batches(monkeypatch, on_batch) -> None:
  """Routes every training batch through `on_batch(step_index, inputs)` (0-based step index).

  The first call is the batch the state is initialised from, with the index of step 1.
  """
  original = run_builder.training_input
  monkeypatch.setattr(run_builder, 'training_input',
                      lambda *args: _ObservedInput(original(*args), on_batch))


def sigterm_in_step(step_index: int):
  """An `on_batch` for `patch_train_batches` that sends this process SIGTERM when step
  `step_index`'s batch is drawn (a scheduler's kill in the middle of the run)."""
  def on_batch(index, batch):
    if index == step_index:
      os.kill(os.getpid(), signal.SIGTERM)
    return batch
  return on_batch


def checkpoint_steps(workdir) -> list[int]:
  directory = os.path.join(workdir, checkpoint.CHECKPOINT_DIR)
  return sorted(int(name) for name in os.listdir(directory) if name.isdigit())


def restore_raw_state(workdir, step: int) -> dict:
  """The whole saved train state of `step` as host arrays."""
  return checkpoint.restore_state_dict(workdir, step)
