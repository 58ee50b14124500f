"""docs/porting.md stays true: its typical Flax loop trains DQ layers on 2 devices with every
invariant intact after each step (checked inside tests/porting_loop.py), and a pmap step that
does not synchronise quant_stats is caught by `check_replicated` (tests/pmap_quant_stats.py)."""
import json
import os
import pathlib
import subprocess
import sys

import pytest

pytestmark = pytest.mark.xdist_group('porting_loop')  # One run of the loop.


def _run_on_two_devices(script_name, *args):
  """The JSON report a script of tests/ prints last, run on 2 virtual CPU devices."""
  env = {**os.environ, 'XLA_FLAGS': '--xla_force_host_platform_device_count=2',
         'JAX_PLATFORMS': 'cpu'}
  script = pathlib.Path(__file__).with_name(script_name)
  result = subprocess.run([sys.executable, str(script), *args], env=env, capture_output=True,
                          text=True, timeout=600, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope='session')
def ported_loop_reports():
  return _run_on_two_devices('porting_loop.py', 'wrap_decays', 'l2_in_loss', 'distill',
                             'l2_unmasked')


@pytest.mark.parametrize('variant', ['wrap_decays', 'l2_in_loss', 'distill'])
def test_ported_flax_loop_keeps_dq_invariants_on_two_devices(variant, ported_loop_reports):
  report = ported_loop_reports[variant]
  assert report['restored_equal'] and report['eval_finite'], report
  assert report['warnings'] == [], report  # e.g. no L2 on DQ parameters: it is masked


def test_ported_loop_with_the_examples_unmasked_l2_term_warns_naming_decay_mask(
    ported_loop_reports):
  report = ported_loop_reports['l2_unmasked']
  assert any('conv0/weight_quantizer, conv1/weight_quantizer' in warning and
             'dqnn.optim.decay_mask(params)' in warning for warning in report['warnings']), report
  assert report['losses'][-1] < report['losses'][0], report


def test_pmap_without_sync_quant_stats_is_caught_by_check_replicated():
  report = _run_on_two_devices('pmap_quant_stats.py')
  for diverged in ('unsynchronised', 'replicated_array'):
    assert 'differs between devices' in report[diverged], report
    assert "dqnn.layers.sync_quant_stats(new['quant_stats'], axis_name)" in report[diverged]
  assert report['synchronised'] is None and report['replicated_equal'] is None, report
