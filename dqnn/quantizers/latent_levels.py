"""Latent-weight control for DQ's first claim: DQ's level tables, trained through a float kernel.

Everything is DQ's (`dq_weight.DQWeight`) except how the weights move: the per-channel level
table is initialised by the same k-means and receives the same gradient (each level the mean of
its weights' gradients, as `dqnn.optim` gives DQ levels), but the weights are a float shadow
`kernel` trained with the straight-through gradient and quantized to the nearest level at every
step, instead of the quantized weights updated directly. Registered as `latent_levels`; the
budgeted study compares it with DQ (`experiments/budgeted_study.py`, group `claims`).
"""
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from dqnn.quantizers import dq_weight
from dqnn.quantizers import levels as lv
from dqnn.quantizers.bits import check_bits

KERNEL = 'kernel'


@jax.custom_vjp
def _quantize(levels: jax.Array, latent: jax.Array, index: jax.Array) -> jax.Array:
  """`levels[g, index[n, g]]` exactly; backward, the latent weights get the gradient straight
  through and a level the mean of its weights' gradients."""
  return lv.lookup(levels, index)


def _quantize_fwd(levels, latent, index):
  return lv.lookup(levels, index), (levels, index)


def _quantize_bwd(residuals, g):
  levels, index = residuals
  num_levels = levels.shape[-1]
  sums = lv.sum_by_level(g, index, num_levels)
  counts = lv.sum_by_level(jnp.ones_like(g), index, num_levels)
  return (sums / jnp.maximum(counts, 1.0)).astype(levels.dtype), g, None


_quantize.defvjp(_quantize_fwd, _quantize_bwd)


class LatentLevelsWeight(nn.Module):
  """`w_q = levels[nearest(kernel)]` with a float `kernel` (straight-through) and learned levels."""
  bits: int
  kernel_init: Callable = nn.initializers.lecun_normal()
  per_channel: bool = True
  kmeans_iterations: int = 10

  @nn.compact
  def __call__(self, shape: tuple[int, ...]) -> jax.Array:
    check_bits(self.bits, 'w_bits')
    kernel = self.param(KERNEL, self.kernel_init, shape, jnp.float32)
    # Fitted to the kernel it starts with: the random one, or a float model's (warm start
    # leaves the levels to be initialised with the float kernel in place).
    levels = self.param(dq_weight.LEVELS, lambda _: dq_weight.params_from_kernel(
        kernel, self.bits, per_channel=self.per_channel,
        kmeans_iterations=self.kmeans_iterations)[dq_weight.LEVELS])
    levels = jnp.sort(levels, axis=-1)  # Learned levels may cross; nearest needs them sorted.
    groups = lv.as_groups(kernel, levels.shape[0])
    index = jax.lax.stop_gradient(lv.nearest_index(groups, levels))
    return _quantize(levels, groups, index).reshape(shape)
