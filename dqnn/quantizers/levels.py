"""Level-table arithmetic shared by the quantizers.

A level table holds `L = 2**bits` strictly increasing values per group, shape `(G, L)`. Values
being quantized are laid out as `(N, G)`: group `g` is column `g` (the output channel of a
kernel, or a single column for a per-tensor table). See docs/method.md for the equations.
"""
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

# Up to this many levels, per-level sums are a fused compare-and-reduce (no scatter, deterministic
# on every backend); beyond it (8 bits) a scatter-add is cheaper than the L-fold compare.
_COMPARE_MAX_LEVELS = 16


def as_groups(x: jax.Array, num_groups: int) -> jax.Array:
  """Reshapes `x` (last axis = output channels) to `(N, G)`; `G` is 1 or x.shape[-1]."""
  return x.reshape(-1, num_groups)


def sum_by_level(values: jax.Array, level_index: jax.Array, num_levels: int) -> jax.Array:
  """`out[g, l] = sum of values[n, g] over n with level_index[n, g] == l`, shape `(G, L)`."""
  if num_levels > _COMPARE_MAX_LEVELS:
    groups = jnp.broadcast_to(jnp.arange(values.shape[1]), values.shape)
    return jnp.zeros((values.shape[1], num_levels), values.dtype).at[groups, level_index].add(values)
  return _sum_by_level_compare(values, level_index, num_levels=num_levels)


# Jitted so that eager callers (initialisation) compile it once per shape, not once per call.
@functools.partial(jax.jit, static_argnames='num_levels')
def _sum_by_level_compare(values, level_index, *, num_levels):
  return jax.lax.platform_dependent(
      values, level_index, cpu=functools.partial(_sum_by_level_looped, num_levels=num_levels),
      default=functools.partial(_sum_by_level_fused, num_levels=num_levels))


def _sum_by_level_fused(values, level_index, *, num_levels):
  """All levels in one compare-and-reduce pass over the values."""
  hits = level_index[..., None] == jnp.arange(num_levels)
  return jnp.sum(jnp.where(hits, values[..., None], 0), axis=0)


def _sum_by_level_looped(values, level_index, *, num_levels):
  """One reduction per level: XLA:CPU does not vectorise the fused form's L-output reduction,
  which makes it ~3x slower on a large kernel (benchmarks/dq_weight_ops.py)."""
  per_level = jax.lax.map(lambda l: jnp.sum(jnp.where(level_index == l, values, 0), axis=0),
                          jnp.arange(num_levels))
  return per_level.T


def lookup(levels: jax.Array, level_index: jax.Array) -> jax.Array:
  """`levels[g, level_index[n, g]]`, shape `(N, G)`; `level_index` in `[0, L-1]`."""
  num_levels = levels.shape[-1]
  if num_levels > _COMPARE_MAX_LEVELS:
    return jnp.take_along_axis(levels.T, level_index, axis=0)
  # One select per level: elementwise and fused, where XLA's CPU gather goes element by
  # element (several times slower on a large kernel).
  value = jnp.broadcast_to(levels[:, 0], level_index.shape)
  for k in range(1, num_levels):
    value = jnp.where(level_index == k, levels[:, k], value)
  return value


def _ramp(x: jax.Array, k: int, num_levels: int) -> jax.Array:
  """`x` clipped to `[0, 1]`, unbounded below for the first interval and above for the last."""
  if k > 0:
    x = jnp.maximum(x, 0)
  if k < num_levels - 2:
    x = jnp.minimum(x, 1)
  return x


def round_index(index: jax.Array, num_levels: int) -> jax.Array:
  """The level a straight-through index selects: round, clipped to `[0, L-1]`."""
  return jnp.clip(jnp.round(index), 0, num_levels - 1).astype(jnp.int32)


def soft_value(index: jax.Array, levels: jax.Array) -> jax.Array:
  """`s(index, levels)`: piecewise-linear interpolation of each group's levels at `index`.

  Extended linearly past the end levels with the end gaps, so `s` is a bijection between
  `[-1/2, L-1/2]` and the union of the levels' rounding cells.
  """
  num_levels = levels.shape[-1]
  if num_levels > _COMPARE_MAX_LEVELS:
    lower = jnp.clip(jnp.floor(index), 0, num_levels - 2).astype(jnp.int32)
    lo = lookup(levels, lower)
    return lo + (index - lower) * (lookup(levels, lower + 1) - lo)
  # `levels[0] + sum_k gap_k * ramp(index - k)`: elementwise, no gather (see `lookup`).
  gaps = jnp.diff(levels, axis=-1)
  value = jnp.broadcast_to(levels[:, 0], index.shape)
  for k in range(num_levels - 1):
    value = value + gaps[:, k] * _ramp(index - k, k, num_levels)
  return value


def fractional_index(values: jax.Array, levels: jax.Array) -> jax.Array:
  """`s^-1(values, levels)`, clipped to `[-1/2, L-1/2]`; its rounding is the nearest level."""
  num_levels = levels.shape[-1]
  if num_levels > _COMPARE_MAX_LEVELS:
    # Per group: the last level <= value, as the left end of the interpolation interval.
    below = jax.vmap(lambda lv, v: jnp.searchsorted(lv, v, side='right', method='scan'),
                     in_axes=(0, 1), out_axes=1)
    lower = jnp.clip(below(levels, values) - 1, 0, num_levels - 2)
    lo = lookup(levels, lower)
    index = lower + (values - lo) / (lookup(levels, lower + 1) - lo)
  else:
    # `sum_k ramp((value - level_k) / gap_k)`, the inverse of `soft_value` term by term.
    inverse_gaps = 1 / jnp.diff(levels, axis=-1)
    index = jnp.zeros_like(values)
    for k in range(num_levels - 1):
      index = index + _ramp((values - levels[:, k]) * inverse_gaps[:, k], k, num_levels)
  return jnp.clip(index, -0.5, num_levels - 0.5)


def nearest_index(values: jax.Array, levels: jax.Array) -> jax.Array:
  """Index of the nearest level for each value, `(N, G)` against `(G, L)`."""
  if levels.shape[-1] > _COMPARE_MAX_LEVELS:
    return round_index(fractional_index(values, levels), levels.shape[-1])
  # Count the midpoints below each value: elementwise, cheap to compile and to run.
  midpoints = (levels[:, 1:] + levels[:, :-1]) / 2
  return jnp.sum(values[..., None] > midpoints, axis=-1, dtype=jnp.int32)


def min_gap(levels: jax.Array, ratio: float) -> jax.Array:
  """The smallest gap levels may have: `ratio` times each group's mean gap (never 0)."""
  spread = levels[:, -1:] - levels[:, :1]
  return jnp.maximum(ratio * spread / (levels.shape[-1] - 1), 1e-8)


def make_increasing(levels: jax.Array, gap: jax.Array) -> jax.Array:
  """Sorts each row and pushes levels apart so consecutive gaps are at least `gap`.

  The adjustment is centred, so a symmetric table stays symmetric.
  """
  levels = jnp.sort(levels, axis=-1)
  steps = gap * jnp.arange(levels.shape[-1])
  shifted = levels - steps
  pushed_up = jax.lax.cummax(shifted, axis=1) + steps
  pushed_down = -jax.lax.cummax(-shifted, axis=1, reverse=True) + steps
  return (pushed_up + pushed_down) / 2


def mirror(half_levels: jax.Array) -> jax.Array:
  """The full symmetric table `(-h[::-1], h)` of a positive half table `h`, shape `(G, L)`
  (leading stacked axes allowed)."""
  return jnp.concatenate([-half_levels[..., ::-1], half_levels], axis=-1)


def symmetrise(table: jax.Array) -> jax.Array:
  """The nearest table symmetric about zero: level `k` and level `L-1-k` become `+-` their
  mean magnitude."""
  return (table - table[..., ::-1]) / 2


def ratio_or(numerator: jax.Array, denominator: jax.Array, fallback: jax.Array) -> jax.Array:
  """`numerator / denominator` where `denominator > 0`, else `fallback` (no NaN gradient)."""
  positive = denominator > 0
  return jnp.where(positive, numerator / jnp.where(positive, denominator, 1), fallback)


def lloyd_step(values: jax.Array, levels: jax.Array, weights: jax.Array | None = None) -> jax.Array:
  """One (weighted) k-means step: each level moves to the mean of the values nearest to it.

  A level with no values keeps its place. Returns the unsorted, unprojected new table.
  """
  num_levels = levels.shape[-1]
  index = nearest_index(values, levels)
  weights = jnp.ones_like(values) if weights is None else weights
  mass = sum_by_level(weights, index, num_levels)
  total = sum_by_level(weights * values, index, num_levels)
  return ratio_or(total, mass, levels)


@functools.partial(jax.jit, static_argnames=('num_levels', 'iterations', 'symmetric', 'gap_ratio'))
def kmeans_levels(values: jax.Array, num_levels: int, *, iterations: int, symmetric: bool,
                  gap_ratio: float) -> jax.Array:
  """Per-column k-means of `values` `(N, G)` into `num_levels` levels, started at quantiles.

  With `symmetric`, the data are mirrored and each step keeps the table symmetric.
  """
  if symmetric:
    values = jnp.concatenate([values, -values], axis=0)
  # Start at the (k + 1/2)/L quantiles (order statistics; cheaper to compile than jnp.quantile).
  positions = ((jnp.arange(num_levels) + 0.5) / num_levels * values.shape[0]).astype(jnp.int32)
  levels = jnp.sort(values, axis=0)[positions].T

  def project(levels):
    if symmetric:
      levels = symmetrise(levels)
    return make_increasing(levels, min_gap(levels, gap_ratio))

  return jax.lax.fori_loop(0, iterations, lambda _, lv: project(lloyd_step(values, lv)),
                           project(levels))


def nearest_value_1d(x: jax.Array, levels: jax.Array) -> jax.Array:
  """The nearest of the sorted 1-D `levels` for every element of `x`, in `x`'s dtype.

  The comparisons run in the levels' precision (an exact upcast of a bfloat16 `x`, fused into
  the same pass), and the chosen level is then rounded to `x`'s dtype once.
  """
  if levels.shape[0] > _COMPARE_MAX_LEVELS:
    return levels[nearest_level_1d(x, levels)].astype(x.dtype)
  # The highest level whose lower midpoint x passes: elementwise selects, no gather.
  xf = x.astype(levels.dtype)
  midpoints = (levels[1:] + levels[:-1]) / 2
  value = jnp.broadcast_to(levels[0], x.shape)
  for k in range(1, levels.shape[0]):
    value = jnp.where(xf > midpoints[k - 1], levels[k], value)
  return value.astype(x.dtype)


def nearest_level_1d(x: jax.Array, levels: jax.Array) -> jax.Array:
  """Index of the nearest of the sorted 1-D `levels` for every element of `x`."""
  xf = x.astype(levels.dtype)
  midpoints = (levels[1:] + levels[:-1]) / 2
  if levels.shape[0] <= _COMPARE_MAX_LEVELS:
    # Unrolled, so it stays elementwise and fuses into its consumer (a sum over a new axis
    # would be a reduction of its own, written out in full).
    index = jnp.zeros(x.shape, jnp.int32)
    for k in range(levels.shape[0] - 1):
      index = index + (xf > midpoints[k]).astype(jnp.int32)
    return index
  return jnp.searchsorted(midpoints, xf, side='left').astype(jnp.int32)


class ChannelLevelSums(NamedTuple):
  """Per channel `c` and level `l`, over every element of channel `c`."""
  count: jax.Array  # (C, L): how many elements round to level l
  residual: jax.Array  # (C, L): sum of (x - levels[l]) over them
  energy: jax.Array | None  # (C,): sum of x^2 (when asked for)


def channel_level_sums(x: jax.Array, levels: jax.Array, *, energy: bool = False
                       ) -> ChannelLevelSums:
  """Per-channel, per-level sums of `x` (channels last) against the sorted 1-D `levels`.

  Accumulated in the levels' precision (float32) whatever `x`'s dtype. Up to 16 levels this is
  a single pass over `x`: one variadic reduction whose operands are elementwise in `x`, so no
  backend writes out an upcast copy, the level index or an `[..., L]` one-hot tensor.
  """
  num_levels = levels.shape[0]
  channels = x.reshape(-1, x.shape[-1])
  xf = channels.astype(levels.dtype)
  nearest = nearest_level_1d(channels, levels)
  if num_levels > _COMPARE_MAX_LEVELS:
    # 8 bits: a scatter-add per sum beats 2L + 1 reduction operands.
    count = sum_by_level(jnp.ones_like(xf), nearest, num_levels)
    residual = sum_by_level(xf - levels[nearest], nearest, num_levels)
    squares = jnp.sum(xf * xf, axis=0) if energy else None
    return ChannelLevelSums(count, residual, squares)
  zero = jnp.zeros((), levels.dtype)
  operands = [jnp.where(nearest == k, 1, zero) for k in range(num_levels)]
  operands += [jnp.where(nearest == k, xf - levels[k], zero) for k in range(num_levels)]
  if energy:
    operands.append(xf * xf)
  sums = jax.lax.reduce(operands, [zero] * len(operands),
                        lambda a, b: tuple(u + v for u, v in zip(a, b)), (0,))
  return ChannelLevelSums(jnp.stack(sums[:num_levels], axis=-1),
                          jnp.stack(sums[num_levels:2 * num_levels], axis=-1),
                          sums[-1] if energy else None)
