"""Shared test fixtures: the read-only data under ../shared (skipped when absent)."""
import os
import pathlib

import pytest

SHARED_DATA = pathlib.Path(
    os.environ.get('DQNN_SHARED_DATA',
                   pathlib.Path(__file__).resolve().parents[1].parent / 'shared' / 'data'))


@pytest.fixture
def cifar100_npz() -> pathlib.Path:
  path = SHARED_DATA / 'cifar100' / 'train.npz'
  if not path.exists():
    pytest.skip(f'{path} is absent (set DQNN_SHARED_DATA to the folder holding cifar100/train.npz)')
  return path
