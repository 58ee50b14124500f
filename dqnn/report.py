r"""Model cost report: per conv/dense layer and in total, parameters, bits, storage, MACs, BOPs.

  python -m dqnn.report --config=configs/cifar100_resnet20_w2a2.py [--json]
  python -m dqnn.report --workdir=/tmp/dqnn/r20_w2a2       # the run's config and variables

Storage: a quantized kernel takes `ceil(N * w_bits / 8)` bytes of packed indices plus its
float32 level table `(G, 2**w_bits)` (as in the `.dqnn` export); a float kernel `4 N` bytes;
biases are float32. BOPs = MACs x w_bits x a_bits, float operands counting 32 bits. MACs are
per image. BatchNorm parameters (float32, foldable) are one extra row; activation level tables
(a few floats per layer) are not counted.
"""
import dataclasses
import json
import math
from typing import Any

from absl import app
from absl import flags
import flax.linen as nn
import jax
from ml_collections import config_flags

from dqnn import checkpoint
from dqnn import run_config
from dqnn import runs
from dqnn import tracing
from dqnn.quantizers import FULL_PRECISION, readout
from dqnn.variables import BATCH_STATS, WEIGHT_QUANTIZER, path_name, subtree

_FLOAT_BYTES = 4


@dataclasses.dataclass
class LayerCost:
  name: str
  kind: str
  params: int
  w_bits: int
  a_bits: int
  macs: int
  bops: int
  packed_bytes: int
  float_bytes: int

  @property
  def compression(self) -> float:
    return self.float_bytes / self.packed_bytes if self.packed_bytes else 1.0


def layer_costs(model: nn.Module, input_shape: tuple[int, ...],
                variables: Any | None = None) -> list[LayerCost]:
  """Costs of every conv/dense layer of `model` for one input of `input_shape` (HWC), plus a
  'batch_norm' row; `variables` default to the model's abstract (eval_shape) initialisation."""
  calls, variables = tracing.layer_calls(model, input_shape, variables)
  params = variables['params']
  rows = [_layer_cost(module, in_shape, out_shape, subtree(params, module.path))
          for module, in_shape, out_shape in calls]
  bn_params = sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(
      variables.get(BATCH_STATS, {})))
  # Stored BN: scale and bias (parameters) plus mean and var (statistics), all float32.
  bn_bytes = 2 * bn_params * _FLOAT_BYTES
  rows.append(LayerCost('batch_norm', 'bn', bn_params, FULL_PRECISION, FULL_PRECISION, 0, 0,
                        bn_bytes, bn_bytes))
  return rows


def _layer_cost(module, in_shape, out_shape, params) -> LayerCost:
  w_bits = getattr(module, 'w_bits', FULL_PRECISION)
  a_bits = getattr(module, 'a_bits', FULL_PRECISION)
  name = path_name(module.path)
  if isinstance(module, nn.Conv):
    kernel_shape = (*module.kernel_size, in_shape[-1] // module.feature_group_count,
                    module.features)
    macs = math.prod(out_shape[1:]) * math.prod(kernel_shape[:-1])
  else:
    kernel_shape = (in_shape[-1], module.features)
    macs = math.prod(kernel_shape)
  weights = math.prod(kernel_shape)
  bias = module.features if module.use_bias else 0
  float_bytes = (weights + bias) * _FLOAT_BYTES
  packed = float_bytes
  if w_bits != FULL_PRECISION:
    quantizer = params[WEIGHT_QUANTIZER]
    groups = readout.level_groups(module, quantizer)
    packed = (math.ceil(weights * w_bits / 8) + groups * 2 ** w_bits * _FLOAT_BYTES
              + bias * _FLOAT_BYTES)
  return LayerCost(name, 'conv' if isinstance(module, nn.Conv) else 'dense', weights + bias,
                   w_bits, a_bits, macs, macs * w_bits * a_bits, packed, float_bytes)


def total(rows: list[LayerCost]) -> LayerCost:
  return LayerCost('total', '', sum(r.params for r in rows), 0, 0, sum(r.macs for r in rows),
                   sum(r.bops for r in rows), sum(r.packed_bytes for r in rows),
                   sum(r.float_bytes for r in rows))


def config_costs(config, variables: Any | None = None) -> list[LayerCost]:
  """`layer_costs` of a training config's model (abstract, or with a run's `variables`)."""
  size = runs.image_size(config)
  return layer_costs(runs.model_from_config(config), (size, size, 3), variables)


def as_json(rows: list[LayerCost]) -> dict[str, Any]:
  def row(r):
    return {**dataclasses.asdict(r), 'compression': r.compression}
  return {'layers': [row(r) for r in rows], 'total': row(total(rows))}


def as_table(rows: list[LayerCost]) -> str:
  header = ('layer', 'kind', 'params', 'W', 'A', 'MACs', 'BOPs', 'packed B', 'float32 B',
            'ratio')
  lines = [[r.name, r.kind, f'{r.params:,}', str(r.w_bits or ''), str(r.a_bits or ''),
            f'{r.macs:,}', f'{r.bops:,}', f'{r.packed_bytes:,}', f'{r.float_bytes:,}',
            f'{r.compression:.2f}x'] for r in [*rows, total(rows)]]
  widths = [max(len(x) for x in column) for column in zip(header, *lines)]

  def fmt(cells):
    return '  '.join(c.ljust(w) if i < 2 else c.rjust(w)
                     for i, (c, w) in enumerate(zip(cells, widths)))

  rule = '-' * len(fmt(header))
  return '\n'.join([fmt(header), rule, *map(fmt, lines[:-1]), rule, fmt(lines[-1])])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError('Too many command-line arguments.')
  options = flags.FLAGS
  try:
    rows = _costs(options.config, options.workdir)
  except (FileNotFoundError, checkpoint.CorruptCheckpointError,
          checkpoint.CheckpointMismatchError, run_config.ConfigError) as error:
    raise SystemExit(f'ERROR: {error}') from None
  print(json.dumps(as_json(rows), indent=2) if options.json else as_table(rows))


def _costs(config, workdir: str | None) -> list[LayerCost]:
  """Rows for `config`, or for `workdir`'s config and variables (`config` must then agree)."""
  variables = None
  if workdir:
    saved, variables = runs.read_workdir(workdir)
    differences = run_config.state_differences(saved.to_dict(), config) if config else []
    if differences:
      raise checkpoint.CheckpointMismatchError('\n  '.join([
          f'--workdir {workdir} was trained with another model than --config builds:',
          *differences, 'Pass --workdir alone (its own config is used) or its config.']))
    config = config or saved
  if config is None:
    raise app.UsageError('Pass --config, --workdir, or both.')
  run_config.validate(config)
  return config_costs(config, variables)


def _define_flags():
  # Defined only when run as a program, so importing dqnn.report adds no global flags.
  flags.DEFINE_string('workdir', None, 'A training run: its config and trained variables.')
  flags.DEFINE_bool('json', False, 'Print JSON instead of a table.')
  config_flags.DEFINE_config_file('config', None, 'Experiment config file.')


if __name__ == '__main__':
  _define_flags()
  app.run(main)
