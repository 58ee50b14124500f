"""DoReFa-Net (Zhou et al. 2016, baseline) weight and activation quantizers. No learned levels."""
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from dqnn.quantizers.bits import FULL_PRECISION, check_bits
from dqnn.quantizers.dq_activation import unit_grid
from dqnn.quantizers.ste import replace_ste, round_ste


def quantize_unit(x: jax.Array, bits: int) -> jax.Array:
  """Uniform `bits`-bit quantization of `x` in [0, 1], straight-through."""
  steps = 2 ** bits - 1
  return round_ste(x * steps) / steps


class DoReFaWeight(nn.Module):
  bits: int
  kernel_init: Callable = nn.initializers.lecun_normal()

  @nn.compact
  def __call__(self, shape: tuple[int, ...]) -> jax.Array:
    check_bits(self.bits, 'w_bits')
    kernel = self.param('kernel', self.kernel_init, shape, jnp.float32)
    if self.bits == 1:
      scale = jax.lax.stop_gradient(jnp.mean(jnp.abs(kernel)))
      return replace_ste(kernel, jnp.where(kernel >= 0, scale, -scale))
    squashed = jnp.tanh(kernel)
    unit = squashed / (2 * jnp.max(jnp.abs(squashed))) + 0.5
    return 2 * quantize_unit(unit, self.bits) - 1


class DoReFaActivation(nn.Module):
  """Clips to [0, 1] ([-1, 1] when signed) and quantizes uniformly."""
  bits: int
  signed: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    check_bits(self.bits, 'a_bits')
    if self.bits == FULL_PRECISION:
      return x
    xf = x.astype(jnp.float32)
    if self.signed:
      return (2 * quantize_unit((jnp.clip(xf, -1, 1) + 1) / 2, self.bits) - 1).astype(x.dtype)
    return quantize_unit(jnp.clip(xf, 0, 1), self.bits).astype(x.dtype)

  def nominal_levels(self, variables: dict) -> tuple[jax.Array, bool]:
    """The fixed uniform grid; midpoint thresholds match it up to ties."""
    del variables  # No learned state.
    return unit_grid(2 ** self.bits, self.signed).astype(jnp.float32), False
