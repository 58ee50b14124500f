"""Parameter trees seen module by module, in any container of mappings (dict, FrozenDict,
`nnx.State`): which leaves are one quantizer's, and a map over the quantizers that declare a
capability (`dqnn.quantizers.WeightCapabilities`).

A quantizer module is recognised by the exact set of parameter names it creates. Under
`nn.scan`/`nn.vmap` its parameters carry leading stacked axes (its `stacked_axes` capability
counts them); functions mapped over quantizers see one layer at a time (vmapped over them).
"""
from typing import Any, Callable

import jax

from dqnn.quantizers import registry


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


def per_layer(fn: Callable, params: dict) -> Callable:
  """`fn` vmapped over the stacked axes of a quantizer's parameters (none: `fn` itself)."""
  for _ in range(registry.capability(params, 'stacked_axes')(params)):
    fn = jax.vmap(fn)
  return fn


def quantizer_modules(params: Any, having: str):
  """`(module path, {name: leaf position}, capability)` of each quantizer in `params` that
  declares the capability `having`, and the flattened `(leaves, treedef)`."""
  _, leaves, treedef, modules = leaves_by_module(params)
  found = []
  for path, names in modules.items():
    value = registry.capability(names, having)
    if value is not None:
      found.append((path, names, value))
  return found, leaves, treedef


def map_quantizers(having: str, fn: Callable[[Any, dict, dict], dict], tree: Any,
                   params: Any) -> Any:
  """`tree` (shaped like `params`) with the entries of each quantizer that declares the
  capability `having` replaced by `fn(that capability, its entries of tree, its params)`, one
  layer at a time."""
  found, param_leaves, treedef = quantizer_modules(params, having)
  leaves = treedef.flatten_up_to(tree)
  for _, names, value in found:
    own = {name: param_leaves[position] for name, position in names.items()}
    mapped = per_layer(lambda entries, p, value=value: fn(value, entries, p), own)(
        {name: leaves[position] for name, position in names.items()}, own)
    for name, position in names.items():
      leaves[position] = mapped[name]
  return jax.tree.unflatten(treedef, leaves)
