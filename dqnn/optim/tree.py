"""Parameter trees seen module by module, in any container of mappings (dict, FrozenDict,
`nnx.State`): which leaves are one DQ weight quantizer's, and a map over those quantizers.

A DQ weight quantizer is a module whose parameters are exactly `index` plus `levels` (or
`half_levels`). Under `nn.scan`/`nn.vmap` its parameters carry leading stacked axes
(`levels (S, G, L)`, `index (S, ..., G)`); functions mapped over quantizers see one layer at a
time (vmapped over the stacked axes).
"""
from typing import Any, Callable

import jax

from dqnn.quantizers import dq_weight

DQ_WEIGHT_NAMES = (frozenset({dq_weight.INDEX, dq_weight.LEVELS}),
                   frozenset({dq_weight.INDEX, dq_weight.HALF_LEVELS}))


def _name(key) -> str:
  for attribute in ('key', 'idx'):
    if hasattr(key, attribute):
      return str(getattr(key, attribute))
  return str(key)


def leaves_by_module(tree: Any):
  """`(paths, leaves, treedef, modules)`: `modules` maps a parent path to `{name: position}`."""
  flat, treedef = jax.tree_util.tree_flatten_with_path(tree)
  # Attribute keys are a wrapper's own fields (an `nnx.Variable`'s `value`), not names.
  paths = [tuple(_name(key) for key in path if not isinstance(key, jax.tree_util.GetAttrKey))
           for path, _ in flat]
  modules = {}
  for position, path in enumerate(paths):
    modules.setdefault(path[:-1], {})[path[-1] if path else ''] = position
  return paths, [leaf for _, leaf in flat], treedef, modules


def is_dq_weight_module(names) -> bool:
  return frozenset(names) in DQ_WEIGHT_NAMES


def stacked_axes(params: dict) -> int:
  """How many leading stacked axes (nn.scan) a DQ quantizer's parameters have."""
  level_name = dq_weight.HALF_LEVELS if dq_weight.HALF_LEVELS in params else dq_weight.LEVELS
  return params[level_name].ndim - 2


def per_layer(fn: Callable, params: dict) -> Callable:
  """`fn` vmapped over the stacked axes of a DQ quantizer's parameters (none: `fn` itself)."""
  for _ in range(stacked_axes(params)):
    fn = jax.vmap(fn)
  return fn


def map_dq_weights(fn: Callable[[dict, dict], dict], tree: Any, params: Any) -> Any:
  """`tree` (shaped like `params`) with each DQ weight quantizer's entries replaced by
  `fn(its entries of tree, its params)`, one layer at a time."""
  _, param_leaves, treedef, modules = leaves_by_module(params)
  leaves = treedef.flatten_up_to(tree)
  for names in modules.values():
    if not is_dq_weight_module(names):
      continue
    own = {name: param_leaves[position] for name, position in names.items()}
    mapped = per_layer(fn, own)({name: leaves[position] for name, position in names.items()}, own)
    for name, position in names.items():
      leaves[position] = mapped[name]
  return jax.tree.unflatten(treedef, leaves)
