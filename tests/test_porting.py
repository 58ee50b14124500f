"""docs/porting.md stays true: its typical Flax loop trains DQ layers on 2 devices with every
invariant intact after each step (checked inside tests/porting_loop.py)."""
import json
import os
import pathlib
import subprocess
import sys

import pytest


@pytest.mark.parametrize('variant', ['wrap_decays', 'l2_in_loss'])
def test_ported_flax_loop_keeps_dq_invariants_on_two_devices(variant):
  env = {**os.environ, 'XLA_FLAGS': '--xla_force_host_platform_device_count=2',
         'JAX_PLATFORMS': 'cpu'}
  script = pathlib.Path(__file__).with_name('porting_loop.py')
  result = subprocess.run([sys.executable, str(script), variant], env=env, capture_output=True,
                          text=True, timeout=600, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads(result.stdout.strip().splitlines()[-1])
  assert report['restored_equal'] and report['eval_finite'], report
  assert report['losses'][-1] < report['losses'][0], report
