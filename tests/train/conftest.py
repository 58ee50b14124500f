"""Fixtures for the training tests: mock datasets and the shared ImageNet sample."""
import os
import pathlib

import pytest

from dqnn.data import mock
from train_testlib import SHARED_DATA


@pytest.fixture
def subprocess_env() -> dict[str, str]:
  """The environment for a CPU-only subprocess (it shares the session's compile cache)."""
  return {**os.environ, 'JAX_PLATFORMS': 'cpu'}


@pytest.fixture(scope='session')
def cifar_data_dir(tmp_path_factory) -> str:
  """A mock CIFAR-100 (64 train / 16 test examples) written once per session."""
  directory = str(tmp_path_factory.mktemp('mock_cifar'))
  mock.write_mock_dataset('cifar100', directory, num_examples=64)
  return directory


@pytest.fixture(scope='session')
def imagenet_data_dir(tmp_path_factory) -> str:
  """A mock ImageNet (32 train / 8 validation JPEGs) written once per session."""
  directory = str(tmp_path_factory.mktemp('mock_imagenet'))
  mock.write_mock_dataset('imagenet2012', directory, num_examples=32)
  return directory


@pytest.fixture
def imagenet_sample() -> pathlib.Path:
  path = SHARED_DATA / 'imagenet_sample'
  if not path.is_dir():
    pytest.skip(f'{path} is absent (set DQNN_SHARED_DATA to the folder holding imagenet_sample/)')
  return path
