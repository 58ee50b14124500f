"""LQ-Nets weight quantizer (baseline): latent float weights, per-channel learned basis.

Levels are `{e . v : e in {-1,1}^b}` per output channel; the basis `v` is refit in closed form
(least squares given the current codes) at every training step and smoothed by a moving
average, as in Zhang et al. 2018. The basis is state (`quant_stats`), not a parameter; the
latent kernel gets the straight-through gradient. LQ-Nets' activation quantizer is
`DQActivation(weighting='pooled', parameterisation='basis', update='closed_form')`.
"""
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from dqnn.quantizers import levels as lv
from dqnn.quantizers.bits import check_bits
from dqnn.quantizers.dq_activation import binary_codes
from dqnn.variables import QUANT_STATS
from dqnn.quantizers.ste import replace_ste


def signed_codes(bits: int) -> jax.Array:
  return 2.0 * binary_codes(bits) - 1.0


def _sorted_codes(basis: jax.Array, bits: int) -> jax.Array:
  """Per group, the codes ordered as the levels they give: `(G, L, b)`."""
  codes = signed_codes(bits)
  order = jnp.argsort(basis @ codes.T, axis=-1)
  return codes[order]


def basis_levels(basis: jax.Array, bits: int) -> jax.Array:
  return jnp.sort(basis @ signed_codes(bits).T, axis=-1)


def fit_basis(groups: jax.Array, basis: jax.Array, bits: int) -> jax.Array:
  """Least-squares basis per group with each weight's code held at its nearest level."""
  levels = basis_levels(basis, bits)
  nearest = lv.nearest_index(groups, levels)
  count = lv.sum_by_level(jnp.ones_like(groups), nearest, levels.shape[-1])
  total = lv.sum_by_level(groups, nearest, levels.shape[-1])
  codes = _sorted_codes(basis, bits)
  gram = jnp.einsum('glb,gl,glc->gbc', codes, count, codes) + 1e-9 * jnp.eye(bits)
  return jnp.linalg.solve(gram, jnp.einsum('glb,gl->gb', codes, total)[..., None])[..., 0]


class LQNetsWeight(nn.Module):
  bits: int
  kernel_init: Callable = nn.initializers.lecun_normal()
  per_channel: bool = True
  momentum: float = 0.9
  init_iterations: int = 10
  # As BatchNorm's: True keeps the stored basis even when quant_stats is mutable.
  use_running_average: bool = False

  @nn.compact
  def __call__(self, shape: tuple[int, ...]) -> jax.Array:
    check_bits(self.bits, 'w_bits')
    kernel = self.param('kernel', self.kernel_init, shape, jnp.float32)
    groups = lv.as_groups(kernel, shape[-1] if self.per_channel else 1)

    def initial_basis():
      # Uniform levels over +-2 std, then a few refits: the baseline at its own best start.
      std = jnp.std(groups, axis=0)[:, None]
      basis = 2.0 * std * 2.0 ** jnp.arange(self.bits) / (2 ** self.bits - 1)
      for _ in range(self.init_iterations):
        basis = fit_basis(groups, basis, self.bits)
      return basis

    basis = self.variable(QUANT_STATS, 'basis', initial_basis)
    if (not self.use_running_average and self.is_mutable_collection(QUANT_STATS)
        and not self.is_initializing()):
      fitted = fit_basis(jax.lax.stop_gradient(groups), basis.value, self.bits)
      basis.value = self.momentum * basis.value + (1 - self.momentum) * fitted
    levels = basis_levels(basis.value, self.bits)
    quantized = lv.lookup(levels, lv.nearest_index(groups, levels))
    return replace_ste(groups, quantized).reshape(shape)
