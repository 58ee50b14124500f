r"""Per-channel activation quantization error of a trained float model: DQ's per-channel error
weighting against the pooled weighting (LQ-Nets) and the RMS weighting between them, layer by
layer.

    python -m experiments.channel_error --workdir=<float run> --a_bits=1,2 [--out=errors.json]
        [--activations=unnormalized]

DQ's second claim is that a quantizer fitted to the pooled error is biased toward a few
high-energy channels, so weighting each channel's error by its energy serves the majority of
channels better. That should matter most where channel energies differ most (depthwise
convolutions, 1-bit activations). For each quantized activation this measures, on one batch of
the run's held-out split:

- how much the channel energies `mean x_c^2` differ (the 90th over the 10th percentile);
- the mean over channels of the relative error `mean (x_c - Q(x_c))^2 / mean x_c^2` with levels
  fitted in closed form under each weighting (`dq_activation.fit_levels`), and the share of
  channels whose relative error is lower under DQ's weighting;
- what DQ's weighting costs: its absolute (pooled) squared error over the pooled fit's (and the
  same for the RMS weighting).

The network is the float run's with every layer's input quantized to `a_bits` bits by DQ's
activation quantizer (weights stay float, so only activation quantization is measured), its
ranges initialised on the batch as a fine-tune from that run would (`dqnn.warm_start`).

In a model with BatchNorm every quantized input follows one (directly, or through a residual
sum). `--activations=unnormalized` measures instead what a quantizer sees where no BatchNorm
precedes it: the ReLU of each conv's output before its BatchNorm (as in a conv-ReLU network
without normalization), levels initialised on the batch as DQ's quantizer initialises them. It
is a proxy: the channel scales are those of the BatchNorm-trained float run, which BatchNorm
leaves free, not those a network trained without BatchNorm would learn. For the real thing,
run the default mode on a float run of a model without BatchNorm (`cifar_resnet20_no_bn`).
"""
import argparse
import json
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from dqnn import plots
from dqnn import quantizers
from dqnn import runs
from dqnn import tracing
from dqnn import variables as variables_lib
from dqnn import warm_start
from dqnn.layers import QuantConv, QuantDense
from dqnn.quantizers import dq_activation
from dqnn.quantizers import levels as lv
from dqnn.quantizers import readout
from dqnn.quantizers.bits import FULL_PRECISION

WEIGHTINGS = dq_activation.WEIGHTINGS  # 'channel' (DQ), 'rms', 'pooled'.
# Closed-form refits per weighting, as dqnn.plots draws them.
FIT_ITERATIONS = 10


def quantized_config(float_config, a_bits: int):
  """The float run's config with every quantized layer's input at `a_bits` (DQ), float weights."""
  config = float_config.copy_and_resolve_references()
  config.quant.w_bits = FULL_PRECISION
  config.quant.a_bits = a_bits
  config.quant.act_quantizer = 'dq'
  config.quant.act_options = {}
  return config


def _errors(x: jax.Array, parameterisation: str, value: jax.Array, bits: int,
            signed: bool) -> dict:
  """Channel energies and each weighting's per-channel relative and pooled absolute error, the
  levels refit from `value` under each weighting."""
  x = jnp.asarray(x, jnp.float32)
  energy = np.asarray(jnp.mean(x.reshape(-1, x.shape[-1]) ** 2, axis=0))
  result = {'channels': int(x.shape[-1]),
            'energy_p90_over_p10': float(np.percentile(energy, 90)
                                         / max(np.percentile(energy, 10), 1e-30))}
  errors = {}
  for weighting in WEIGHTINGS:
    levels = dq_activation.fit_levels(x, parameterisation, value, bits, signed, weighting,
                                      FIT_ITERATIONS)
    q = lv.nearest_value_1d(x, levels)
    errors[weighting] = np.asarray(dq_activation.per_channel_relative_error(x, q))
    result[f'{weighting}_mean_relative_error'] = float(errors[weighting].mean())
    result[f'{weighting}_squared_error'] = float(jnp.mean((x - q) ** 2))
  result['channels_better_with_channel_weighting'] = float(
      np.mean(errors['channel'] < errors['pooled']))
  result['absolute_error_cost'] = (result['channel_squared_error']
                                   / max(result['pooled_squared_error'], 1e-30))
  result['rms_absolute_error_cost'] = (result['rms_squared_error']
                                       / max(result['pooled_squared_error'], 1e-30))
  return result


def _layer_errors(module, variables, x: jax.Array) -> dict:
  """`_errors` of a quantized layer's input, from its quantizer's stored levels."""
  quantizer = quantizers.activation_quantizer(module.act_quantizer, module.a_bits,
                                              module.act_options, signed=module.a_signed)
  stored = variables_lib.layer_variables(variables, (*module.path, variables_lib.ACT_QUANTIZER))
  parameterisation, value = readout.level_parameter(quantizer, stored)
  return {'layer': '/'.join(module.path),
          'depthwise': getattr(module, 'feature_group_count', 1) > 1,
          **_errors(x, parameterisation, value, module.a_bits, module.a_signed)}


def _read_run(workdir: str, data_dir: str):
  """The run's config and variables; `data_dir`, when given, replaces the run's (moved data)."""
  config, variables = runs.read_workdir(workdir)
  if data_dir:
    config.data_dir = data_dir
  return config, variables


def measure_layer_inputs(workdir: str, a_bits: Sequence[int], batch_size: int = 256,
                         seed: int = 0, data_dir: str = '') -> list[dict]:
  """One record per quantized activation of the float run in `workdir` and bit width."""
  float_config, float_variables = _read_run(workdir, data_dir)
  images, source = plots.sample_batch(float_config, batch_size)
  rng = jax.random.key(seed)
  size = runs.image_size(float_config)
  records = []
  for bits in a_bits:  # Each bit width is its own quantized network.
    config = quantized_config(float_config, bits)
    model = runs.model_from_config(config)
    fresh = model.init(rng, images, train=True)
    variables = warm_start.from_float(model, fresh, float_variables, images, rng)
    inputs = plots.layer_inputs(config, variables, images)
    calls, _ = tracing.layer_calls(model, (size, size, 3), variables)
    for module, _, _ in calls:
      if isinstance(module, (QuantConv, QuantDense)) and module.a_bits != FULL_PRECISION:
        record = _layer_errors(module, variables, inputs['/'.join(module.path)])
        records.append({'a_bits': bits, 'source': source, 'activations': 'layer_inputs',
                        **record})
  return records


def unnormalized_activations(config, variables, images) -> dict[str, tuple[bool, jax.Array]]:
  """`(depthwise, ReLU of the output)` of every conv of the float model, by layer path: the
  output before its BatchNorm, as the next quantizer would see it without normalization."""
  model = runs.model_from_config(config)
  depthwise = {}

  def capture(variables, images):
    outputs = {}

    def record(module, x, run):
      out = run()
      name = '/'.join(module.path)
      depthwise[name] = module.feature_group_count > 1
      outputs[name] = nn.relu(out)
      return out

    with tracing.intercept_layers((nn.Conv,), record):
      model.apply(variables, images, train=False)
    return outputs

  outputs = jax.jit(capture)(variables, images)
  return {name: (depthwise[name], x) for name, x in outputs.items()}


def measure_unnormalized(workdir: str, a_bits: Sequence[int], batch_size: int = 256,
                         seed: int = 0, data_dir: str = '') -> list[dict]:
  """One record per conv of the float run in `workdir` and bit width: its output's ReLU."""
  config, variables = _read_run(workdir, data_dir)
  images, source = plots.sample_batch(config, batch_size)
  activations = unnormalized_activations(config, variables, images)  # The same for every width.
  records = []
  for bits in a_bits:
    quantizer = quantizers.activation_quantizer('dq', bits)
    for name, (depthwise, x) in activations.items():
      parameterisation, value = readout.level_parameter(
          quantizer, quantizer.init(jax.random.key(seed), x))
      records.append({'a_bits': bits, 'source': source, 'activations': 'unnormalized',
                      'layer': name, 'depthwise': depthwise,
                      **_errors(x, parameterisation, value, bits, False)})
  return records


MEASURES = {'layer_inputs': measure_layer_inputs, 'unnormalized': measure_unnormalized}


def summary_table(records: list[dict]) -> str:
  """Markdown: per bit width and layer kind, the layers' means of each measure."""
  lines = ['| A bits | layers | count | energy p90/p10 (median) | mean rel. error, DQ channel '
           '| mean rel. error, RMS | mean rel. error, pooled | channels better with DQ '
           '| DQ abs. error / pooled | RMS abs. error / pooled |',
           '| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |']
  for bits in sorted({r['a_bits'] for r in records}):
    for kind, keep in (('all', lambda r: True), ('depthwise', lambda r: r['depthwise']),
                       ('other', lambda r: not r['depthwise'])):
      chosen = [r for r in records if r['a_bits'] == bits and keep(r)]
      if not chosen or (kind != 'all' and len(chosen) == len([
          r for r in records if r['a_bits'] == bits])):
        continue

      def mean(key):
        return float(np.mean([r[key] for r in chosen]))

      spread = float(np.median([r['energy_p90_over_p10'] for r in chosen]))
      lines.append(f'| {bits} | {kind} | {len(chosen)} | {spread:.1f} | '
                   f'{mean("channel_mean_relative_error"):.4f} | '
                   f'{mean("rms_mean_relative_error"):.4f} | '
                   f'{mean("pooled_mean_relative_error"):.4f} | '
                   f'{100 * mean("channels_better_with_channel_weighting"):.0f}% | '
                   f'{mean("absolute_error_cost"):.2f} | '
                   f'{mean("rms_absolute_error_cost"):.2f} |')
  return '\n'.join(lines) + '\n'


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--workdir', required=True, help='A float training run.')
  parser.add_argument('--a_bits', default='1,2', help='Comma-separated activation bit widths.')
  parser.add_argument('--batch_size', type=int, default=256)
  parser.add_argument('--activations', choices=sorted(MEASURES), default='layer_inputs',
                      help="The quantized layers' inputs, or each conv's output before its "
                           'BatchNorm, ReLU\'d (no normalization before the quantizer).')
  parser.add_argument('--data_dir', default='',
                      help="The prepared dataset, where it moved since the run (default: the "
                           "run's own).")
  parser.add_argument('--out', default='', help='Also write every layer record to this JSON.')
  args = parser.parse_args()
  a_bits = [int(bits) for bits in args.a_bits.split(',')]
  records = MEASURES[args.activations](args.workdir, a_bits, args.batch_size,
                                       data_dir=args.data_dir)
  if args.out:
    with open(args.out, 'w') as f:
      json.dump(records, f, indent=1)
  print(f'{args.workdir} ({records[0]["source"]}, {args.batch_size} images, '
        f'{args.activations})\n')
  print(summary_table(records))


if __name__ == '__main__':
  main()
