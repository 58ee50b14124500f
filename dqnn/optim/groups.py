"""Parameter groups: what each parameter of a dqnn model is, whatever its module is named.

Groups (`parameter_groups`):
- `weights`: float kernels, latent kernels of the baselines and DQ indices (all in weight units);
- `levels`: DQ weight level tables;
- `quantizer`: activation-quantizer parameters and baseline quantizer parameters (LSQ steps,
  PACT clips, gradient-trained activation levels);
- `other`: BatchNorm scales/offsets, biases and anything else.

A quantizer module is recognised by the set of parameter names it creates (its signature,
registered below for every quantizer in `dqnn.quantizers`), so a quantizer is grouped the same
inside `QuantConv`, inside `QuantizeActivation` or under any name in a user's model. Outside
quantizers, a leaf named `kernel` is a weight and everything else is `other`.
"""
from typing import Any, Mapping

import jax

from dqnn.optim.tree import leaves_by_module
from dqnn.quantizers import dq_weight
from dqnn.quantizers.dq_activation import DQActivation
from dqnn.quantizers.dq_weight import DQWeight
from dqnn.quantizers.lsq import LSQActivation, LSQWeight
from dqnn.quantizers.pact import PACTActivation

GROUPS = ('weights', 'levels', 'quantizer', 'other')
WEIGHTS, LEVELS, QUANTIZER, OTHER = GROUPS

# Parameter-name signature of a quantizer module -> (the quantizer, the group of each name).
_QUANTIZER_SIGNATURES: dict[frozenset, tuple[type, dict[str, str]]] = {}


def register_quantizer_params(quantizer: type, groups: Mapping[str, str]) -> None:
  """Declares that a module of class `quantizer` creating exactly the parameters `groups` names
  is a quantizer, and which group each of them belongs to. Call it for your own quantizers."""
  unknown = set(groups.values()) - set(GROUPS)
  if unknown:
    raise ValueError(f'Unknown parameter groups {sorted(unknown)}; use {", ".join(GROUPS)}.')
  signature = frozenset(groups)
  if signature in _QUANTIZER_SIGNATURES and _QUANTIZER_SIGNATURES[signature][1] != dict(groups):
    raise ValueError(f'Parameters {sorted(signature)} are already registered with other groups '
                     f'by {_QUANTIZER_SIGNATURES[signature][0].__name__}.')
  _QUANTIZER_SIGNATURES[signature] = (quantizer, dict(groups))


register_quantizer_params(DQWeight, {dq_weight.INDEX: WEIGHTS, dq_weight.LEVELS: LEVELS})
register_quantizer_params(DQWeight, {dq_weight.INDEX: WEIGHTS, dq_weight.HALF_LEVELS: LEVELS})
register_quantizer_params(LSQWeight, {'kernel': WEIGHTS, 'step': QUANTIZER})
# DQActivation with update='gradient': one parameter, named by its parameterisation.
for _name in ('basis', 'levels', 'clip'):
  register_quantizer_params(DQActivation, {_name: QUANTIZER})
register_quantizer_params(LSQActivation, {'step': QUANTIZER})
register_quantizer_params(PACTActivation, {'clip': QUANTIZER})
# LQ-Nets and DoReFa weights have one latent `kernel`: a weight, as any float kernel.


def _leaf_groups(params: Any) -> tuple[list[str], list[bool], Any]:
  """Each leaf's group, whether it is a DQ index, and the tree's structure."""
  paths, leaves, treedef, modules = leaves_by_module(params)
  groups, is_index = [None] * len(leaves), [False] * len(leaves)
  for names in modules.values():
    registered = _QUANTIZER_SIGNATURES.get(frozenset(names))
    for name, position in names.items():
      if registered:
        groups[position] = registered[1][name]
        is_index[position] = registered[0] is DQWeight and name == dq_weight.INDEX
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
