"""LSQ (Esser et al. 2020, baseline): learned step size for weights and activations.

`q = round(clip(x / s, -Qn, Qp)) * s` with a straight-through round; the step `s` is a parameter
whose gradient is scaled by `1 / sqrt(N * Qp)` (N = weights in the layer, or activation
elements per example), and initialised to `2 mean|x| / sqrt(Qp)`.
"""
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from dqnn.quantizers.bits import FULL_PRECISION, check_bits
from dqnn.quantizers.dq_activation import initial_top_level
from dqnn.quantizers.ste import round_ste, scale_grad


def lsq_quantize(x, step, low, high, grad_scale):
  step = scale_grad(step, grad_scale)
  return round_ste(jnp.clip(x / step, low, high)) * step


class LSQWeight(nn.Module):
  bits: int
  kernel_init: Callable = nn.initializers.lecun_normal()

  @nn.compact
  def __call__(self, shape: tuple[int, ...]) -> jax.Array:
    check_bits(self.bits, 'w_bits')
    q_neg, q_pos = signed_range(self.bits)
    kernel = self.param('kernel', self.kernel_init, shape, jnp.float32)
    step = self.param('step', lambda _: 2 * jnp.mean(jnp.abs(kernel)) / jnp.sqrt(q_pos))
    return lsq_quantize(kernel, step, -q_neg, q_pos, 1.0 / jnp.sqrt(kernel.size * q_pos))


def signed_range(bits: int) -> tuple[int, int]:
  """LSQ's signed integer range `(Qn, Qp)`; 1 bit has no zero-centred signed grid."""
  if bits == 1:
    raise ValueError("LSQ's signed grid needs >= 2 bits; use the 'dq' quantizer for 1 bit.")
  return 2 ** (bits - 1), 2 ** (bits - 1) - 1


class LSQActivation(nn.Module):
  bits: int
  signed: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    check_bits(self.bits, 'a_bits')
    if self.bits == FULL_PRECISION:
      return x
    xf = x.astype(jnp.float32)
    q_neg, q_pos = signed_range(self.bits) if self.signed else (0, 2 ** self.bits - 1)
    # initial_top_level / Qp = 2 mean|x| / sqrt(Qp): LSQ's own initial step.
    step = self.param('step', lambda _: initial_top_level(xf, q_pos + 1) / q_pos)
    per_example = xf.size // xf.shape[0]
    return lsq_quantize(xf, step, -q_neg, q_pos,
                        1.0 / jnp.sqrt(per_example * q_pos)).astype(x.dtype)

  def nominal_levels(self, variables: dict) -> tuple[jax.Array, bool]:
    """The grid `k * step` of trained `variables`; midpoint thresholds match it up to ties."""
    q_neg, q_pos = signed_range(self.bits) if self.signed else (0, 2 ** self.bits - 1)
    return jnp.arange(-q_neg, q_pos + 1, dtype=jnp.float32) * variables['params']['step'], False
