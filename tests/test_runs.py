"""What a config builds, and reading a run back, without the dataset or a training run."""

import pytest

from dqnn import metrics
from dqnn import runs
from train_testlib import tiny_config


def test_class_count_and_image_size_come_from_the_dataset_and_model():
  config = tiny_config('cifar100')
  assert (runs.num_classes(config), runs.image_size(config)) == (100, 32)
  fake = tiny_config('fake', num_classes=7, image_size=32)
  assert runs.num_classes(fake) == 7
  assert runs.model_from_config(fake).num_classes == 7
  assert runs.model_from_config(fake, classes=3).num_classes == 3


def test_a_folder_without_config_is_not_a_run(tmp_path):
  with pytest.raises(FileNotFoundError, match='is not a training run: it has no config.json'):
    runs.read_workdir(str(tmp_path))


def test_read_metrics_returns_the_records_in_order(tmp_path):
  (tmp_path / metrics.METRICS_FILE).write_text(
      '{"step": 1, "split": "train", "loss": 2.0}\n\n{"step": 2, "split": "eval", "top1": 0.5}\n')
  assert runs.read_metrics(str(tmp_path)) == [
      {'step': 1, 'split': 'train', 'loss': 2.0}, {'step': 2, 'split': 'eval', 'top1': 0.5}]
