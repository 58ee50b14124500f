"""DQ weight quantizer: learnable level tables and a straight-through index, no latent weights.

Parameters (collection `params`): `levels` `(G, L)` strictly increasing — or `half_levels`
`(G, L/2)`, positive, for a symmetric table — and `index`, shaped like the kernel, in
`[-1/2, L-1/2]`. The network computes with `w_q = levels[g, round(index)]`. The direct update
(`dqnn.quantizers.dq_weight_update`, run by `dqnn.optim.wrap_optimizer`) moves these
parameters; see docs/method.md.
"""
from typing import Any, Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from dqnn.quantizers import levels as lv
from dqnn.quantizers.bits import FULL_PRECISION, SUPPORTED_BITS, check_bits

LEVELS = 'levels'
HALF_LEVELS = 'half_levels'
INDEX = 'index'
# Levels never come closer than this fraction of their mean gap.
GAP_RATIO = 0.01


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
  if bits == FULL_PRECISION:
    raise ValueError(f'params_from_kernel quantizes; bits={FULL_PRECISION} keeps the float kernel '
                     'as it is.')
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


def fit(params: dict, kernel: jax.Array) -> dict:
  """Parameters like `params` (same bits, grouping, symmetry and dtypes) fitted to a float
  kernel; warm start from a float model."""
  table = level_table(params)
  bits = int(np.log2(table.shape[-1]))
  fitted = params_from_kernel(jnp.asarray(kernel), bits,
                              per_channel=table.shape[0] == kernel.shape[-1],
                              symmetric=HALF_LEVELS in params)
  return {name: fitted[name].astype(params[name].dtype) for name in params}


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

  # Read-out (dqnn.quantizers.readout): the stored table and index are the export itself.
  def kernel_levels(self, variables: Mapping[str, Any]) -> tuple[jax.Array, jax.Array]:
    """`(G, 2**bits)` level table and kernel-shaped level indices of trained `variables`."""
    params = variables['params']
    table = level_table(params)
    return table, lv.round_index(params[INDEX], table.shape[-1])

  def quantized_kernel(self, variables: Mapping[str, Any]) -> jax.Array:
    return quantized_weight(variables['params'])

  def level_groups(self, params: Mapping[str, Any]) -> int:
    """How many level tables (G) the layer stores; works on abstract shapes too."""
    return params[HALF_LEVELS if HALF_LEVELS in params else LEVELS].shape[-2]


# What moves DQ parameters out of their domain, and what to do about it.
_LIKELY_CAUSE = (
    'Likely cause: the DQ parameters were trained by an optimizer that does not end with the '
    'direct update (a plain optax optimizer, or L2 decay applied to every parameter): build '
    'the optimizer with dqnn.optim.wrap_optimizer(your_tx) (or create_optimizer), mask decay '
    'with dqnn.optim.decay_mask, and repair these parameters once with '
    'dqnn.optim.project_dq_params(params). If they were restored from a checkpoint, that '
    'checkpoint is corrupt or not of a DQ model.')


def validate(params: Mapping[str, Any], where: str) -> None:
  """Raises one clear error if one DQ weight quantizer's parameters are malformed.

  Checks what the direct update relies on: strictly increasing levels (positive half levels
  when symmetric), an index shaped like a kernel whose last axis matches the level groups and
  lying in `[-1/2, L-1/2]`, and finite values. Stacked layers (`nn.scan`: leading axes on both)
  are checked layer by layer. `dqnn.quantizers.validate_params` runs it on every DQ weight of a
  tree: call that on restored parameters before training resumes.
  """
  half = params.get(HALF_LEVELS)
  rows = params[LEVELS] if half is None else lv.mirror(half)
  stacked = rows.shape[:-2]
  if rows.ndim < 2 or rows.shape[-1] not in tuple(2 ** b for b in SUPPORTED_BITS):
    raise ValueError(f'DQ levels at {where} have shape {rows.shape}; expected '
                     f'([stacked axes], G, 2**bits).')
  index = params[INDEX]
  if (index.ndim < 2 + len(stacked) or index.shape[:len(stacked)] != stacked
      or rows.shape[-2] not in (1, index.shape[-1])):
    raise ValueError(f'DQ index at {where} has shape {index.shape}, which does not match '
                     f'{rows.shape[-2]} level groups (levels of shape {rows.shape}).')
  if not (bool(jnp.all(jnp.isfinite(rows))) and bool(jnp.all(jnp.isfinite(index)))):
    raise ValueError(f'DQ parameters at {where} are not finite. {_LIKELY_CAUSE}')
  gaps = jnp.diff(rows, axis=-1)
  if half is not None:
    gaps = jnp.concatenate([gaps, half[..., :1]], axis=-1)
  if not bool(jnp.all(gaps > 0)):
    raise ValueError(f'DQ levels at {where} are not strictly increasing (smallest gap '
                     f'{float(jnp.min(gaps)):.3g}). {_LIKELY_CAUSE}')
  num_levels = rows.shape[-1]
  low, high = float(jnp.min(index)), float(jnp.max(index))
  if low < -0.5 or high > num_levels - 0.5:
    outside = int(jnp.sum((index < -0.5) | (index > num_levels - 0.5)))
    raise ValueError(f'DQ index at {where} leaves its domain [-1/2, {num_levels - 0.5}]: '
                     f'{outside} entries outside, range [{low:.6g}, {high:.6g}]. '
                     f'{_LIKELY_CAUSE}')
