"""Budgeted mixed precision on a tiny float run: layers, costs, sensitivities, written config."""
import math
import os
import subprocess
import sys

import jax
import pytest

from dqnn import bit_allocation
from dqnn import mixed_precision
from dqnn import report
from dqnn import run_config
from dqnn import runs
from dqnn import train
from dqnn.data import mock
from train_testlib import REPO, tiny_config

# One worker runs the module, so its module-scoped training runs once (pytest.ini: loadgroup).
pytestmark = pytest.mark.xdist_group('mixed_precision')

_BODY = ['stage1/block0/conv1', 'stage1/block0/conv2', 'stage2/block0/conv1',
         'stage2/block0/conv2']


@pytest.fixture(scope='session')
def float_run(tmp_path_factory):
  """(workdir, config, variables): 4 steps of the tiny CIFAR ResNet in float, mock CIFAR-100."""
  root = tmp_path_factory.mktemp('float_run')
  mock.write_mock_dataset('cifar100', str(root / 'data'), num_examples=64)
  config = tiny_config('cifar100', w_bits=32, a_bits=32, data_dir=str(root / 'data'))
  train.train_and_evaluate(config, str(root / 'workdir'))
  return (str(root / 'workdir'), *runs.read_workdir(str(root / 'workdir')))


def test_body_layers_leave_the_first_and_last_to_the_edge_policy(float_run):
  config = float_run[1].copy_and_resolve_references()
  assert mixed_precision.body_layers(config) == _BODY
  config.quant.first_layer = config.quant.last_layer = '8bit'
  assert mixed_precision.body_layers(config) == _BODY


def test_costs_are_the_reports_and_an_infeasible_budget_names_the_least(float_run):
  _, config, _ = float_run
  costs, fixed = mixed_precision.choice_costs(config, _BODY, [1, 4], [1, 4], 'bops')
  rows = {row.name: row for row in report.config_costs(config)}
  assert fixed == rows['stem_conv'].bops + rows['head'].bops
  assert costs[1, 4]['stage1/block0/conv1'] == rows['stage1/block0/conv1'].macs * 4
  least = fixed + sum(costs[1, 1].values())
  mixed_precision.check_budget(costs, fixed, least, 'bops')
  with pytest.raises(bit_allocation.InfeasibleBudgetError,
                     match=f'budget of {least - 1:,} bops: the least achievable.* is {least:,}'):
    mixed_precision.check_budget(costs, fixed, least - 1, 'bops')


def test_loss_sensitivity_is_measured_with_one_layer_quantized(float_run):
  _, config, variables = float_run
  probe = mixed_precision.Probe(config, variables, num_batches=1)
  measured = mixed_precision.measure(probe, _BODY[:1], [2, 32], [2, 32], 'loss')
  by_key = {(s.operand, s.bits): s for s in measured}
  # 32 bits is the float run itself: no change, nothing quantized.
  assert by_key['weights', 32].loss_increase == by_key['weights', 32].relative_error == 0
  for operand in ('weights', 'activations'):
    assert math.isfinite(by_key[operand, 2].loss_increase)
    assert 0 < by_key[operand, 2].relative_error < 1


def test_weight_and_activation_candidates_are_separate(float_run):
  # E.g. LSQ, whose signed weight grid needs >= 2 bits, with 1-bit activations allowed.
  _, config, variables = float_run
  costs, _ = mixed_precision.choice_costs(config, _BODY, [2, 4], [1], 'bops')
  assert sorted(costs) == [(2, 1), (4, 1)]
  probe = mixed_precision.Probe(config, variables, num_batches=1)
  for mode in ('proxy', 'loss'):
    measured = mixed_precision.measure(probe, _BODY[:1], [4], [1], mode)
    assert sorted((s.operand, s.bits) for s in measured) == [('activations', 1), ('weights', 4)]


def test_a_quantized_run_is_measured_against_its_own_bits(float_run):
  # A W2A2 model's initial variables stand in for a quantized run (on the float run's data).
  config = tiny_config('cifar100', w_bits=2, a_bits=2, data_dir=float_run[1].data_dir)
  key = jax.random.key(0)
  variables = runs.model_from_config(config).init(
      key, jax.random.normal(key, (8, 32, 32, 3)), train=True)
  probe = mixed_precision.Probe(config, variables, num_batches=1)
  layer = probe.source['params']['stage1']['block0']['conv1']
  assert 'kernel' in layer and 'weight_quantizer' not in layer  # Its w_q, as a float kernel.
  by_key = {(s.operand, s.bits): s
            for s in mixed_precision.measure(probe, _BODY[:1], [2, 4], [2, 4], 'loss')}
  assert by_key['weights', 2].loss_increase == by_key['activations', 2].loss_increase == 0
  assert math.isfinite(by_key['weights', 4].loss_increase)
  assert math.isfinite(by_key['activations', 4].loss_increase)


def test_written_config_trains_and_reports_within_the_budget(float_run, tmp_path):
  workdir, config, _ = float_run
  costs, fixed = mixed_precision.choice_costs(config, _BODY, [1, 4], [1, 4], 'bops')
  # Room for W4A4 in some layers only.
  budget = fixed + sum(costs[1, 4].values())
  output = tmp_path / 'mixed.py'
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu'}
  allocated = subprocess.run(
      [sys.executable, '-m', 'dqnn.mixed_precision', f'--workdir={workdir}',
       f'--budget_bops={budget}', '--bits=1,4', '--sensitivity=proxy', f'--output={output}'],
      capture_output=True, text=True, check=False, cwd=REPO, env=env)
  assert allocated.returncode == 0, allocated.stderr[-2000:]
  assert f'<= budget {budget:,}' in allocated.stdout
  assert output.with_suffix('.md').exists() and output.with_suffix('.png').exists()
  mixed_run = tmp_path / 'mixed_run'
  trained = subprocess.run(
      [sys.executable, '-m', 'dqnn.main', f'--config={output}', f'--workdir={mixed_run}'],
      capture_output=True, text=True, check=False, cwd=REPO, env=env)
  assert trained.returncode == 0, trained.stderr[-2000:]
  # pylint: disable-next=protected-access
  rows = {row.name: row for row in report._costs(None, str(mixed_run))}
  assert report.total(list(rows.values())).bops <= budget
  overrides = run_config.read(str(mixed_run))['quant']['overrides']
  assert sorted(overrides) == _BODY
  assert all((rows[layer].w_bits, rows[layer].a_bits) == (fields['w_bits'], fields['a_bits'])
             for layer, fields in overrides.items())
  assert (rows['stem_conv'].w_bits, rows['head'].w_bits) == (32, 32)
