"""The names in a dqnn model's variables, and reading one layer's share of them.

Collections hold a model's state; the submodule names say where a quantized layer's quantizers
keep theirs (`<layer path>/WEIGHT_QUANTIZER/...` in each collection).
"""
from typing import Any, Mapping, Sequence

PARAMS = 'params'
BATCH_STATS = 'batch_stats'
# Quantizer state that is not trained by gradient (closed-form levels, moving averages).
QUANT_STATS = 'quant_stats'
# What a trained model holds: everything evaluation, export and reports read.
COLLECTIONS = (PARAMS, BATCH_STATS, QUANT_STATS)
# Sown at eval time only: each quantized activation's relative error.
QUANT_METRICS = 'quant_metrics'

# Optimizer groups of parameters (`dqnn.optim.groups`): kernels in weight units, DQ weight level
# tables, quantizer parameters (steps, clips, gradient-trained levels), and everything else.
PARAM_GROUPS = ('weights', 'levels', 'quantizer', 'other')

# The quantizer submodules of QuantConv / QuantDense, and of QuantizeActivation.
WEIGHT_QUANTIZER = 'weight_quantizer'
ACT_QUANTIZER = 'act_quantizer'
QUANTIZER = 'quantizer'


def path_name(path: Sequence[str]) -> str:
  """A module path (or a variable's path under one) as the string that names it everywhere:
  `'stage1/block0/conv1'`."""
  return '/'.join(path)


def subtree(tree: Mapping[str, Any], path: Sequence[str]) -> Any | None:
  """The entry at `path` of a nested mapping (one collection of variables), or None where the
  path is missing."""
  for key in path:
    if not isinstance(tree, Mapping) or key not in tree:
      return None
    tree = tree[key]
  return tree


def layer_variables(variables: dict[str, Any], path: tuple[str, ...]) -> dict[str, dict]:
  """The subtree at module `path` of each collection (empty where a collection has none)."""
  return {name: subtree(variables.get(name, {}), path) or {} for name in COLLECTIONS}
