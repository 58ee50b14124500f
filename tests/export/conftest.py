"""Fixtures for the export tests."""
import pathlib

import pytest

from run_testlib import trained_run


@pytest.fixture(scope='session')
def trained_workdir(tmp_path_factory) -> pathlib.Path:
  return trained_run(tmp_path_factory)[0]
