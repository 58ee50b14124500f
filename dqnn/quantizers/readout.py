"""Trained quantizers read out for export, reports and plots.

Weight quantizers: the quantized kernel `w_q` and its per-channel level table, from the
quantizer's own methods `kernel_levels(variables)`, `quantized_kernel(variables)` and
`level_groups(params)` where it has them (DQ, which stores its tables); otherwise `w_q` comes
from the quantizer's `weight` capability (`registry.WeightCapabilities`) or, for latent-weight
baselines (LQ-Nets, LSQ, DoReFa), from running the quantizer, and its distinct values per output
channel are its levels.

Activation quantizers: the sorted levels they round to, from the quantizer's own
`nominal_levels(variables) -> (levels, exact)` method.
"""
from typing import Any

import flax.linen as nn
import jax
import numpy as np

from dqnn import quantizers
from dqnn.quantizers import registry
from dqnn.variables import path_name

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


def weight_quantizer_of(module: nn.Module) -> nn.Module:
  """The (unbound) weight quantizer a quantized layer builds, for its read-out methods."""
  return quantizers.weight_quantizer(module.weight_quantizer, module.w_bits, module.kernel_init,
                                     module.weight_options)


def kernel_levels(module: nn.Module, variables: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
  """`(G, 2**bits)` levels and kernel-shaped level indices of a quantized layer's kernel: the
  quantizer's own `kernel_levels(variables)` where it has one (DQ stores them), else its `w_q`'s
  distinct values per output channel (latent-weight quantizers).

  `variables`: the layer's `weight_quantizer` subtree of each collection (`params`, ...).
  """
  quantizer = weight_quantizer_of(module)
  if hasattr(quantizer, 'kernel_levels'):
    table, indices = quantizer.kernel_levels(variables)
    return np.asarray(table), np.asarray(indices)
  return per_channel_levels(_quantized_kernel(quantizer, variables), module.w_bits,
                            path_name(module.path))


def quantized_kernel(module: nn.Module, variables: dict[str, Any]) -> np.ndarray:
  """`w_q` of a quantized layer: the quantizer's own `quantized_kernel(variables)`, else its
  `weight` capability, else the quantizer run on its trained variables."""
  return _quantized_kernel(weight_quantizer_of(module), variables)


def _quantized_kernel(quantizer: nn.Module, variables: dict[str, Any]) -> np.ndarray:
  if hasattr(quantizer, 'quantized_kernel'):
    return np.asarray(quantizer.quantized_kernel(variables))
  weight = registry.capability(variables['params'], 'weight')
  if weight is not None:
    return np.asarray(weight(variables['params']))
  shape = tuple(variables['params']['kernel'].shape)
  return np.asarray(quantizer.apply({k: v for k, v in variables.items() if v}, shape))


def level_groups(module: nn.Module, params: dict[str, Any]) -> int:
  """How many level tables a quantized layer stores (`params`: its weight quantizer's, may be
  abstract): the quantizer's `level_groups(params)`, else one per output channel."""
  quantizer = weight_quantizer_of(module)
  if hasattr(quantizer, 'level_groups'):
    return quantizer.level_groups(params)
  return module.features


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
