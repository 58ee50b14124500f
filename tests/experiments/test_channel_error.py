"""experiments/channel_error: per-layer errors of a float run under both weightings."""
import math

from configs import base
from configs import cifar100_mobilenetv2_fp
from dqnn import train
from experiments import channel_error


def test_measures_every_quantized_activation_of_a_float_run(tmp_path):
  config = base.runlocal(cifar100_mobilenetv2_fp.get_config())
  config.num_train_steps = 2
  config.weight_images = False
  train.train_and_evaluate(config, str(tmp_path))
  quantized = channel_error.quantized_config(config, 1)
  assert (quantized.quant.w_bits, quantized.quant.a_bits) == (32, 1)
  assert config.quant.a_bits == 32  # The run's own config is left alone.

  records = channel_error.measure(str(tmp_path), a_bits=1, batch_size=16)
  assert records and all(r['a_bits'] == 1 for r in records)
  assert records[0]['source'] == 'cifar100_sample eval batch'
  # Every conv but the first and every dense but the classifier reads a quantized input.
  layers = [r['layer'] for r in records]
  assert len(layers) == len(set(layers))
  assert any(r['depthwise'] for r in records) and not all(r['depthwise'] for r in records)
  for record in records:
    for key in ('channel_mean_relative_error', 'pooled_mean_relative_error',
                'absolute_error_cost', 'energy_p90_over_p10'):
      assert math.isfinite(record[key]) and record[key] >= 0, (key, record)
    assert 0.0 <= record['channels_better_with_channel_weighting'] <= 1.0
  table = channel_error.summary_table(records)
  assert [line.split(' | ')[1] for line in table.splitlines()[2:]] == [
      'all', 'depthwise', 'other']
