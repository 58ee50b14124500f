"""Fixtures for the training tests: mock datasets, the shared ImageNet sample, a compile cache."""
import os
import pathlib

import jax
import pytest

from dqnn.data import mock
from train_testlib import SHARED_DATA


@pytest.fixture(scope='session', autouse=True)
def compilation_cache(tmp_path_factory) -> str:
  """Shares compiled programs between the tests' runs; subprocess tests pass it on in the env.

  Every run builds the same few programs, and compiling them dominates a tiny run's time.
  """
  directory = str(tmp_path_factory.mktemp('jax_cache'))
  settings = {'jax_compilation_cache_dir': directory,
              'jax_persistent_cache_min_compile_time_secs': 0,
              'jax_persistent_cache_min_entry_size_bytes': -1}
  for name, value in settings.items():
    jax.config.update(name, value)
  return directory


@pytest.fixture
def subprocess_env(compilation_cache) -> dict[str, str]:
  """The environment for a CPU-only subprocess that shares the compile cache."""
  return {**os.environ, 'JAX_PLATFORMS': 'cpu',
          'JAX_COMPILATION_CACHE_DIR': compilation_cache,
          'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS': '0',
          'JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES': '-1'}


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
