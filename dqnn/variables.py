"""The variable collections of a dqnn model, and reading one layer's share of them."""
from typing import Any

PARAMS = 'params'
BATCH_STATS = 'batch_stats'
# Quantizer state that is not trained by gradient (closed-form levels, moving averages).
QUANT_STATS = 'quant_stats'
# What a trained model holds: everything evaluation, export and reports read.
COLLECTIONS = (PARAMS, BATCH_STATS, QUANT_STATS)


def layer_variables(variables: dict[str, Any], path: tuple[str, ...]) -> dict[str, dict]:
  """The subtree at module `path` of each collection (empty where a collection has none)."""
  def subtree(tree):
    for key in path:
      tree = (tree or {}).get(key, {})
    return tree or {}
  return {name: subtree(variables.get(name, {})) for name in COLLECTIONS}
