"""Cost report on a model small enough to count by hand."""
import json
import subprocess
import sys

import flax.linen as nn
import pytest

from configs import base
from dqnn import checkpoint
from dqnn import report
from dqnn.layers import QuantConv, QuantDense
from run_testlib import trained_run

# One worker runs the module, so its module-scoped training runs once (pytest.ini: loadgroup).
pytestmark = pytest.mark.xdist_group('report')


class _Tiny(nn.Module):
  """6x6x3 -> W2A2 3x3 conv (4 channels, VALID, bias) -> 4x4x4 -> flatten -> float dense 10."""

  @nn.compact
  def __call__(self, x, train=False):
    x = QuantConv(4, (3, 3), padding='VALID', w_bits=2, a_bits=2, name='conv')(x)
    x = nn.BatchNorm(use_running_average=not train, name='bn')(x)
    return QuantDense(10, name='head')(x.reshape(x.shape[0], -1))


def test_costs_equal_hand_counts():
  conv, head, bn = report.layer_costs(_Tiny(), (6, 6, 3))
  # conv: 4x4 outputs x 4 channels x 27 MACs each; 108 weights + 4 biases.
  assert (conv.params, conv.macs, conv.bops) == (112, 16 * 4 * 27, 16 * 4 * 27 * 2 * 2)
  # Packed: ceil(108 * 2 / 8) = 27 index bytes, a (4, 4) float32 table, 4 float32 biases.
  assert (conv.packed_bytes, conv.float_bytes) == (27 + 64 + 16, 112 * 4)
  assert (head.params, head.macs, head.bops) == (650, 640, 640 * 32 * 32)
  assert head.packed_bytes == head.float_bytes == 650 * 4
  # BN: 4 channels x (scale, bias, mean, var) in float32.
  assert (bn.params, bn.packed_bytes) == (8, 64)
  total = report.total([conv, head, bn])
  assert (total.macs, total.bops, total.packed_bytes) == (2368, 6912 + 655360, 107 + 2600 + 64)
  assert report.as_json([conv, head, bn])['total']['compression'] == pytest.approx(
      (448 + 2600 + 64) / 2771)


def test_cli_prints_json_and_table():
  args = [sys.executable, '-m', 'dqnn.report', '--config=configs/cifar100_resnet20_w2a2.py']
  data = json.loads(subprocess.run(args + ['--json'], capture_output=True, text=True,
                                   check=True).stdout)
  # He et al.'s ResNet-20 for 100 classes has 275,572 parameters.
  assert data['total']['params'] == 275_572
  assert data['layers'][1]['w_bits'] == 2 and data['layers'][0]['w_bits'] == 32
  table = report.as_table(report.layer_costs(_Tiny(), (6, 6, 3)))
  assert table.splitlines()[0].split()[:3] == ['layer', 'kind', 'params']
  assert table.splitlines()[-1].split()[:2] == ['total', '770']


@pytest.fixture(scope='session')
def trained_workdir(tmp_path_factory):
  return trained_run(tmp_path_factory)[0]


def test_workdir_of_another_model_is_one_clear_error(trained_workdir):
  config = base.cifar100('cifar_resnet20', 2, 2)
  with pytest.raises(checkpoint.CheckpointMismatchError,
                     match="was trained with another model.*\n  model: checkpoint "
                           "'_cifar_resnet_tiny', this run 'cifar_resnet20'"):
    report._costs(config, str(trained_workdir))  # pylint: disable=protected-access
  # Its own config, given explicitly, agrees (the run trained on a mock cifar100).
  own = base.cifar100('cifar_resnet20', 2, 2, arg='runlocal')
  own.dataset = 'cifar100'
  assert report._costs(own, str(trained_workdir))  # pylint: disable=protected-access


@pytest.mark.parametrize('args, named', [
    (['--workdir=/nonexistent/run'], "ERROR: '/nonexistent/run' is not a training run"),
    (['--config=configs/cifar100_resnet20_w2a2.py', '--config.dtype=int8'],
     "ERROR: Invalid config:\n  dtype='int8'"),
])
def test_cli_errors_are_clear_without_a_traceback(args, named):
  result = subprocess.run([sys.executable, '-m', 'dqnn.report', *args], capture_output=True,
                          text=True, check=False)
  assert result.returncode != 0 and 'Traceback' not in result.stderr
  assert named in result.stderr
