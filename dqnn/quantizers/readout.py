"""Trained quantizers read out for export, reports and plots.

Weight quantizers: the quantized kernel `w_q` and its per-channel level table. DQ kernels store
their own tables; latent-weight baselines (LQ-Nets, LSQ, DoReFa) are run to get `w_q`, whose
distinct values per output channel are their levels.

Activation quantizers: the sorted levels they round to, from the quantizer's own
`nominal_levels(variables) -> (levels, exact)` method.
"""
from typing import Any

import flax.linen as nn
import jax
import numpy as np

from dqnn import quantizers
from dqnn.quantizers import dq_weight
from dqnn.quantizers import levels as lv

# Relative spread of float noise around one level that still counts as that level.
_NOISE = 1e-5


class NoReadoutError(NotImplementedError):
  """An activation quantizer that does not say which levels it rounds to."""


def activation_levels(quantizer: nn.Module, variables: dict[str, Any]) -> tuple[jax.Array, bool]:
  """The sorted `(2**bits,)` levels an activation quantizer rounds to, and whether nearest-level
  rounding with midpoint thresholds reproduces it bit for bit (DQ) or up to ties (the others).

  `variables`: the quantizer's subtree of each collection (`params`, `quant_stats`, ...).
  """
  read = getattr(quantizer, 'nominal_levels', None)
  if read is None:
    raise NoReadoutError(
        f'Activation quantizer {type(quantizer).__name__} has no read-out: give it a method '
        '`nominal_levels(self, variables) -> (sorted levels of shape (2**bits,), exact)` '
        '(see dqnn/quantizers/lsq.py) to export it and plot its error.')
  return read(variables)


def level_parameter(quantizer: nn.Module, variables: dict[str, Any]) -> tuple[str, jax.Array]:
  """`(parameterisation, value)` to refit an activation quantizer's levels from (see
  `dq_activation.fit_levels`): its own when it has one (DQ), else its levels as free levels."""
  if hasattr(quantizer, 'level_parameter'):
    return quantizer.level_parameter(variables)
  return 'free', activation_levels(quantizer, variables)[0]


def kernel_levels(module: nn.Module, variables: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
  """`(G, 2**bits)` levels and kernel-shaped level indices of a quantized layer's kernel.

  `variables`: the layer's `weight_quantizer` subtree of each collection (`params`, ...).
  """
  params = variables['params']
  if dq_weight.is_dq_weight(params):
    table = dq_weight.level_table(params)
    return (np.asarray(table),
            np.asarray(lv.round_index(params[dq_weight.INDEX], table.shape[-1])))
  # Latent-weight baselines: w_q as the quantizer computes it, then its values per channel.
  return per_channel_levels(quantized_kernel(module, variables), module.w_bits,
                            '/'.join(module.path))


def quantized_kernel(module: nn.Module, variables: dict[str, Any]) -> np.ndarray:
  """`w_q` of a quantized layer, computed by its own weight quantizer."""
  if dq_weight.is_dq_weight(variables['params']):
    return np.asarray(dq_weight.quantized_weight(variables['params']))
  shape = tuple(variables['params']['kernel'].shape)
  quantizer = quantizers.weight_quantizer(module.weight_quantizer, module.w_bits,
                                          module.kernel_init, module.weight_options)
  return np.asarray(quantizer.apply({k: v for k, v in variables.items() if v}, shape))


def per_channel_levels(w_q: np.ndarray, bits: int, name: str = '') -> tuple[np.ndarray, np.ndarray]:
  """Level table `(out, 2**bits)` and indices of a kernel `w_q` with few values per channel.

  Rows with fewer than `2**bits` distinct values repeat their largest one (never indexed). A
  straight-through `w + (q - w)` (LQ-Nets) leaves rounding noise around each level: values
  are then grouped at the `2**bits - 1` widest gaps, each group stored as its mean.
  """
  groups = w_q.reshape(-1, w_q.shape[-1])
  num_levels = 2 ** bits
  table = np.empty((groups.shape[1], num_levels), np.float32)
  indices = np.empty(groups.shape, np.int32)
  for channel in range(groups.shape[1]):
    distinct, index = np.unique(groups[:, channel], return_inverse=True)
    if distinct.size > num_levels:
      cuts = np.sort(np.argsort(np.diff(distinct))[-(num_levels - 1):]) + 1
      clusters = np.split(distinct, cuts)
      spread = max(float(c[-1] - c[0]) for c in clusters)
      if spread > _NOISE * np.abs(distinct).max():
        raise ValueError(f'{name}: output channel {channel} has {distinct.size} distinct '
                         f'quantized weights, more than 2**{bits}.')
      index = np.searchsorted(cuts, index, side='right')
      distinct = np.array([c.mean() for c in clusters], np.float32)
    table[channel] = np.pad(distinct, (0, num_levels - distinct.size), mode='edge')
    indices[:, channel] = index.reshape(-1)
  return table, indices.reshape(w_q.shape)
