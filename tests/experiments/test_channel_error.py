"""experiments/channel_error: per-layer errors of a float run under both weightings."""
import math

import jax
import numpy as np
import pytest

from configs import base
from configs import cifar100_mobilenetv2_fp
from dqnn import runs
from dqnn import train
from experiments import channel_error


pytestmark = pytest.mark.xdist_group('channel_error_float_run')  # One run for the module.


@pytest.fixture(scope='session')
def float_run(tmp_path_factory):
  """A runlocal MobileNetV2 float run (depthwise and ordinary convolutions), 2 steps."""
  config = base.runlocal(cifar100_mobilenetv2_fp.get_config())
  config.num_train_steps = 2
  config.weight_images = False
  workdir = tmp_path_factory.mktemp('float_run')
  train.train_and_evaluate(config, str(workdir))
  return config, workdir


def test_measures_every_quantized_activation_of_a_float_run(float_run):
  config, tmp_path = float_run
  quantized = channel_error.quantized_config(config, 1)
  assert (quantized.quant.w_bits, quantized.quant.a_bits) == (32, 1)
  assert config.quant.a_bits == 32  # The run's own config is left alone.

  records = channel_error.measure_layer_inputs(str(tmp_path), a_bits=[1], batch_size=16)
  assert records and all(r['a_bits'] == 1 for r in records)
  assert {r['activations'] for r in records} == {'layer_inputs'}
  assert records[0]['source'] == 'cifar100_sample eval batch'
  # Every conv but the first and every dense but the classifier reads a quantized input.
  layers = [r['layer'] for r in records]
  assert len(layers) == len(set(layers))
  assert any(r['depthwise'] for r in records) and not all(r['depthwise'] for r in records)
  for record in records:
    for key in ('channel_mean_relative_error', 'rms_mean_relative_error',
                'pooled_mean_relative_error', 'absolute_error_cost', 'rms_absolute_error_cost',
                'energy_p90_over_p10'):
      assert math.isfinite(record[key]) and record[key] >= 0, (key, record)
    assert 0.0 <= record['channels_better_with_channel_weighting'] <= 1.0
  table = channel_error.summary_table(records)
  assert [line.split(' | ')[1] for line in table.splitlines()[2:]] == [
      'all', 'depthwise', 'other']

  # Without BatchNorm before the quantizer: every conv's output (the first conv's too), ReLU'd.
  unnormalized = channel_error.measure_unnormalized(str(tmp_path), a_bits=[1], batch_size=16)
  conv_layers = [r['layer'] for r in unnormalized]
  # The quantized inputs are those of every conv but the first (the classifier's is float).
  assert set(conv_layers) - set(layers) == {'stem_conv'} and set(layers) < set(conv_layers)
  assert {r['activations'] for r in unnormalized} == {'unnormalized'}
  for record in unnormalized:
    assert math.isfinite(record['channel_mean_relative_error']), record
    assert 0.0 <= record['channels_better_with_channel_weighting'] <= 1.0


def test_unnormalized_activations_are_the_relu_of_each_conv_output_before_batchnorm(float_run):
  config, variables = runs.read_workdir(str(float_run[1]))
  images = np.random.default_rng(0).uniform(0, 1, (2, 32, 32, 3)).astype(np.float32)
  activations = channel_error.unnormalized_activations(config, variables, images)

  stem = next(name for name in activations if name.startswith('stem'))
  kernel = variables['params'][stem]['kernel']
  expected = jax.nn.relu(jax.lax.conv_general_dilated(
      images, kernel, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC')))
  depthwise, x = activations[stem]
  assert not depthwise
  np.testing.assert_allclose(x, expected, rtol=1e-4, atol=1e-5)
  assert any(depthwise for depthwise, _ in activations.values())
  assert all(float(x.min()) >= 0 for _, x in activations.values())
