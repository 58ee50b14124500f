"""DQ weight quantizer: learnable level tables and a straight-through index, no latent weights.

Parameters (collection `params`): `levels` `(G, L)` strictly increasing — or `half_levels`
`(G, L/2)`, positive, for a symmetric table — and `index`, shaped like the kernel, in
`[-1/2, L-1/2]`. The network computes with `w_q = levels[g, round(index)]`. The direct update
(`dqnn.optim.direct_update`) moves these parameters; see docs/method.md.
"""
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from dqnn.quantizers import levels as lv
from dqnn.quantizers.bits import check_bits

LEVELS = 'levels'
HALF_LEVELS = 'half_levels'
INDEX = 'index'
# Levels never come closer than this fraction of their mean gap.
GAP_RATIO = 0.01
_INDEX_SLACK = 1e-3


@jax.custom_vjp
def quantize(levels: jax.Array, index: jax.Array) -> jax.Array:
  """`w_q[n, g] = levels[g, round(index[n, g])]` for `levels (G, L)` and `index (N, G)`."""
  return lv.lookup(levels, lv.round_index(index, levels.shape[-1]))


def _quantize_fwd(levels, index):
  chosen = lv.round_index(index, levels.shape[-1])
  return lv.lookup(levels, chosen), (levels, chosen)


def _quantize_bwd(residuals, g_q):
  levels, chosen = residuals
  # Exact for levels (each level's gradient is the sum over the weights that use it);
  # straight-through for the index, which receives dLoss/dw_q in weight units.
  return lv.sum_by_level(g_q, chosen, levels.shape[-1]).astype(levels.dtype), g_q


quantize.defvjp(_quantize_fwd, _quantize_bwd)


def is_dq_weight(tree: Any) -> bool:
  """Whether a params subtree is one DQ weight quantizer's parameters."""
  return isinstance(tree, dict) and INDEX in tree and (LEVELS in tree or HALF_LEVELS in tree)


def level_table(params: dict) -> jax.Array:
  """The full `(G, L)` level table of a DQ weight quantizer's parameters."""
  if HALF_LEVELS in params:
    return lv.mirror(params[HALF_LEVELS])
  return params[LEVELS]


def quantized_weight(params: dict) -> jax.Array:
  """`w_q` (kernel-shaped) from a DQ weight quantizer's parameters."""
  table = level_table(params)
  index = params[INDEX]
  return quantize(table, lv.as_groups(index, table.shape[0])).reshape(index.shape)


def params_from_kernel(kernel: jax.Array, bits: int, *, per_channel: bool = True,
                       symmetric: bool = False, kmeans_iterations: int = 10) -> dict:
  """DQ parameters that best represent a float kernel: k-means levels, nearest index.

  Used at initialisation (random kernels) and to start from a pretrained float model.
  """
  check_bits(bits, 'w_bits')
  if bits == 32:
    raise ValueError('params_from_kernel quantizes; bits=32 keeps the float kernel as it is.')
  if kernel.ndim < 2:
    raise ValueError(f'A quantized kernel needs rank >= 2 (last axis = output channels); got '
                     f'shape {kernel.shape}.')
  num_levels = 2 ** bits
  groups = lv.as_groups(kernel.astype(jnp.float32), kernel.shape[-1] if per_channel else 1)
  table = lv.kmeans_levels(groups, num_levels, iterations=kmeans_iterations,
                           symmetric=symmetric, gap_ratio=GAP_RATIO)
  index = lv.fractional_index(groups, table).reshape(kernel.shape)
  if symmetric:
    return {HALF_LEVELS: table[:, num_levels // 2:], INDEX: index}
  return {LEVELS: table, INDEX: index}


class DQWeight(nn.Module):
  """Produces a `shape` kernel as `levels[round(index)]`; parameters initialised by k-means."""
  bits: int
  kernel_init: Callable = nn.initializers.lecun_normal()
  per_channel: bool = True
  symmetric: bool = False
  kmeans_iterations: int = 10

  @nn.compact
  def __call__(self, shape: tuple[int, ...]) -> jax.Array:
    check_bits(self.bits, 'w_bits')
    if len(shape) < 2:
      raise ValueError(f'DQWeight needs a kernel of rank >= 2; got shape {shape}.')
    initial = {}

    def init(rng, name):
      # Both parameters come from one float kernel, drawn once.
      if not initial:
        kernel = self.kernel_init(rng, shape, jnp.float32)
        initial.update(params_from_kernel(
            kernel, self.bits, per_channel=self.per_channel, symmetric=self.symmetric,
            kmeans_iterations=self.kmeans_iterations))
      return initial[name]

    names = (HALF_LEVELS if self.symmetric else LEVELS, INDEX)
    return quantized_weight({name: self.param(name, init, name) for name in names})


def validate(params: Any, path: str = '') -> None:
  """Raises one clear error if any DQ weight quantizer in `params` is malformed.

  Checks what the direct update relies on: strictly increasing levels (positive half levels
  when symmetric), an index shaped like a kernel whose last axis matches the level groups, and
  finite values. Call it on restored parameters before training resumes.
  """
  if is_dq_weight(params):
    table = level_table(params)
    where = path or '<root>'
    if table.ndim != 2 or table.shape[-1] not in tuple(2 ** b for b in (1, 2, 3, 4, 8)):
      raise ValueError(f'DQ levels at {where} have shape {table.shape}; expected (G, 2**bits).')
    index = params[INDEX]
    if index.ndim < 2 or table.shape[0] not in (1, index.shape[-1]):
      raise ValueError(f'DQ index at {where} has shape {index.shape}, which does not match '
                       f'{table.shape[0]} level groups.')
    gaps = jnp.diff(table, axis=-1)
    if HALF_LEVELS in params:
      gaps = jnp.concatenate([gaps, params[HALF_LEVELS][:, :1]], axis=-1)
    if not bool(jnp.all(gaps > 0)):
      raise ValueError(f'DQ levels at {where} are not strictly increasing (smallest gap '
                       f'{float(jnp.min(gaps)):.3g}); the checkpoint is corrupt or not a DQ model.')
    if not (bool(jnp.all(jnp.isfinite(table))) and bool(jnp.all(jnp.isfinite(index)))):
      raise ValueError(f'DQ parameters at {where} are not finite.')
    # The domain is [-1/2, L - 1/2]; the slack admits float rounding at its ends, not more.
    low, high = float(jnp.min(index)), float(jnp.max(index))
    if low < -0.5 - _INDEX_SLACK or high > table.shape[-1] - 0.5 + _INDEX_SLACK:
      raise ValueError(f'DQ index at {where} spans [{low:.6g}, {high:.6g}], outside its domain '
                       f'[-0.5, {table.shape[-1] - 0.5}]; the checkpoint is corrupt or was '
                       'trained without the DQ optimizer.')
    return
  if isinstance(params, dict):
    for key, value in params.items():
      validate(value, f'{path}/{key}' if path else key)
