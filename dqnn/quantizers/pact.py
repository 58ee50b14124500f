"""PACT (Choi et al. 2018, baseline): activations clipped at a learned `alpha`, then uniform.

Signed inputs are clipped to `[-alpha, alpha]`.

The clip gets PACT's gradient (the upstream gradient where `x >= alpha`); rounding is
straight-through. `alpha` starts at the shared data-dependent range (`initial_top_level`).
"""
import flax.linen as nn
import jax
import jax.numpy as jnp

from dqnn.quantizers.bits import FULL_PRECISION, check_bits
from dqnn.quantizers.dq_activation import initial_top_level, unit_grid
from dqnn.quantizers.ste import replace_ste


class PACTActivation(nn.Module):
  bits: int
  signed: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    check_bits(self.bits, 'a_bits')
    if self.bits == FULL_PRECISION:
      return x
    xf = x.astype(jnp.float32)
    alpha = self.param('clip', lambda _: initial_top_level(xf, 2 ** self.bits))
    low = -alpha if self.signed else 0.0
    clipped = jnp.minimum(jnp.maximum(xf, low), alpha)
    steps = 2 ** self.bits - 1
    quantized = low + jnp.round((clipped - low) * steps / (alpha - low)) * (alpha - low) / steps
    return replace_ste(clipped, quantized).astype(x.dtype)

  def nominal_levels(self, variables: dict) -> tuple[jax.Array, bool]:
    """The uniform grid up to the trained `alpha`; midpoint thresholds match it up to ties."""
    alpha = variables['params']['clip']
    low = -alpha if self.signed else 0.0
    return low + unit_grid(2 ** self.bits, False) * (alpha - low), False
