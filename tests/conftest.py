"""Shared test set-up: one JAX compile cache for the whole session, and the read-only data under
../shared (skipped when absent).

An expensive fixture (a training run several tests read) is session-scoped even when one module
uses it: xdist may run a module's tests apart, and a module-scoped fixture then runs again.
"""
import os
import pathlib
import shutil
import tempfile

import pytest

# Every test (and every subprocess a test starts: they inherit the environment) reads and writes
# one persistent compile cache. The tests build the same few tiny programs again and again, and
# on CPU compiling them costs far more than running them. Set before JAX is imported, so that
# the in-process tests read it as well; xdist workers inherit the controller's environment.
_CACHE_ENV = 'JAX_COMPILATION_CACHE_DIR'
_OWNS_CACHE = _CACHE_ENV not in os.environ
if _OWNS_CACHE:
  os.environ[_CACHE_ENV] = tempfile.mkdtemp(prefix='dqnn-tests-jax-cache-')
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES', '-1')


def pytest_unconfigure(config):
  if _OWNS_CACHE and not hasattr(config, 'workerinput'):  # The controller made it.
    shutil.rmtree(os.environ[_CACHE_ENV], ignore_errors=True)

SHARED_DATA = pathlib.Path(
    os.environ.get('DQNN_SHARED_DATA',
                   pathlib.Path(__file__).resolve().parents[1].parent / 'shared' / 'data'))


@pytest.fixture
def cifar100_npz() -> pathlib.Path:
  path = SHARED_DATA / 'cifar100' / 'train.npz'
  if not path.exists():
    pytest.skip(f'{path} is absent (set DQNN_SHARED_DATA to the folder holding cifar100/train.npz)')
  return path
