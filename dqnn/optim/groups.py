"""Parameter groups: what each parameter of a dqnn model is, whatever its module is named.

Groups (`parameter_groups`):
- `weights`: float kernels, latent kernels of the baselines and DQ indices (all in weight units:
  a quantizer's `index` capability);
- `levels`: DQ weight level tables;
- `quantizer`: activation-quantizer parameters and baseline quantizer parameters (LSQ steps,
  PACT clips, gradient-trained activation levels);
- `other`: BatchNorm scales/offsets, biases and anything else.

A quantizer module is recognised by the set of parameter names it creates (its signature,
declared with `dqnn.quantizers.register_*_quantizer(..., param_groups=...)`), so a quantizer is
grouped the same inside `QuantConv`, inside `QuantizeActivation` or under any name in a user's
model. Outside
quantizers, a leaf named `kernel` is a weight and everything else is `other`.
"""
from typing import Any

import jax

from dqnn.optim.tree import leaves_by_module
from dqnn.quantizers import registry
from dqnn.variables import PARAM_GROUPS

WEIGHTS, LEVELS, QUANTIZER, OTHER = PARAM_GROUPS


def _leaf_groups(params: Any) -> tuple[list[str], list[bool], Any]:
  """Each leaf's group, whether it is a quantizer's index (its `index` capability), and the
  tree's structure."""
  paths, leaves, treedef, modules = leaves_by_module(params)
  groups, is_index = [None] * len(leaves), [False] * len(leaves)
  for names in modules.values():
    registered = registry.param_signature(names)
    index = registry.capability(names, 'index')
    for name, position in names.items():
      if registered:
        groups[position] = registered[1][name]
        is_index[position] = name == index
      else:
        groups[position] = WEIGHTS if name == 'kernel' else OTHER
  return groups, is_index, treedef


def parameter_groups(params: Any) -> Any:
  """A tree of group names shaped like `params` (any container of mappings)."""
  groups, _, treedef = _leaf_groups(params)
  return jax.tree.unflatten(treedef, groups)


def decay_mask(params: Any) -> Any:
  """True for the float kernels (the network's own and the baselines' latent kernels), False
  for everything else: DQ `index`/`levels`, quantizer parameters, biases, BatchNorm.

  Use it for L2 written in the loss or as `optax.adamw(..., mask=decay_mask)`: decay on a DQ
  `index` would act in index units and drag every weight toward the lowest level, and decay on
  levels or clips shrinks the quantizer's range. DQ weights are decayed on `w_q` by
  `wrap_optimizer(..., weight_decay=...)`.
  """
  groups, is_index, treedef = _leaf_groups(params)
  return jax.tree.unflatten(
      treedef, [group == WEIGHTS and not index for group, index in zip(groups, is_index)])
