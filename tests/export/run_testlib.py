"""One tiny trained run shared by the export, report and plots tests (training dominates)."""
import pathlib

from dqnn import train
from dqnn.data import mock
from train_testlib import tiny_config

_DONE = 'trained.ok'


def trained_run(tmp_path_factory) -> tuple[pathlib.Path, pathlib.Path]:
  """(workdir, data_dir): 4 steps of the tiny CIFAR ResNet, DQ W2A2, on a mock CIFAR-100.

  Trained once per session: later callers (other test modules) find it under the base temp.
  """
  root = tmp_path_factory.getbasetemp() / 'tiny_trained_run'
  workdir, data_dir = root / 'workdir', root / 'data'
  if not (root / _DONE).exists():
    data_dir.mkdir(parents=True, exist_ok=True)
    mock.write_mock_dataset('cifar100', str(data_dir), num_examples=64)
    train.train_and_evaluate(tiny_config('cifar100', data_dir=str(data_dir)), str(workdir))
    (root / _DONE).touch()
  return workdir, data_dir
