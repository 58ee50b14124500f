"""How DQ weight parameters are trained and kept in their domain without gradient descent: the
direct update, the projection, the level counts and the foreign-gradient check. These are DQ's
`WeightCapabilities` (registered in `dqnn.quantizers`); each sees one layer's parameters.

The direct update. The base optimizer turns gradients into steps `u` (for `index`, in weight
units) and `v` (for the levels). For every DQ weight quantizer the update replaces them by
1. `t = s(index, levels) + u`           — gradient descent on the quantized weight itself;
2. `levels' = levels + v` (or a Lloyd refit of the levels to the targets), kept increasing;
3. `index' = s^-1(t, levels')`, rounded when `residual=False`;
and returns `index' - index`, `levels' - levels`.
"""
import jax
import jax.numpy as jnp

from dqnn.quantizers import levels as lv
from dqnn.quantizers.dq_weight import GAP_RATIO, HALF_LEVELS, INDEX, LEVELS, level_table

# The quantized forward pass gives each DQ level exactly the sum of its weights' index gradients
# (straight-through). A mismatch larger than this fraction of the summed magnitudes is a
# gradient from elsewhere; float rounding of the two sums is orders of magnitude smaller.
FOREIGN_GRADIENT_TOLERANCE = 1e-3


def _level_name(params: dict) -> str:
  return HALF_LEVELS if HALF_LEVELS in params else LEVELS


def stacked_axes(params: dict) -> int:
  """How many leading stacked axes (nn.scan) a DQ quantizer's parameters have."""
  return params[_level_name(params)].ndim - 2


def update_within_domain(index: jax.Array, new_index: jax.Array, num_levels: int) -> jax.Array:
  """`new_index - index`, nudged where `index + update` would round out of `[-1/2, L-1/2]`.

  `optax.apply_updates` computes `index + (new_index - index)`, which float rounding can put one
  step outside the domain (8 bits: -0.50000006). There the update becomes the distance to the
  domain's end rounded toward the inside, which lands on or just inside it (float addition is
  monotone); every other update is exactly `new_index - index`.
  """
  update = new_index - index
  landed = index + update
  low, high = -0.5, num_levels - 0.5
  up = jnp.nextafter(low - index, jnp.inf)
  down = jnp.nextafter(high - index, -jnp.inf)
  return jnp.where(landed < low, up, jnp.where(landed > high, down, update))


def direct_step(steps: dict, params: dict, *, residual: bool, level_update: str) -> dict:
  """The direct update of one DQ weight quantizer (see the module docstring)."""
  symmetric = HALF_LEVELS in params
  table = level_table(params)
  num_groups, num_levels = table.shape
  index = lv.as_groups(params[INDEX], num_groups)
  target = lv.soft_value(index, table) + lv.as_groups(steps[INDEX], num_groups)

  level_name = HALF_LEVELS if symmetric else LEVELS
  new_table = level_table({level_name: params[level_name] + steps[level_name]})
  if level_update == 'lloyd':
    new_table = lv.lloyd_step(jnp.concatenate([target, -target]) if symmetric else target,
                              new_table)
  if symmetric:
    new_table = lv.symmetrise(new_table)
  new_table = lv.make_increasing(new_table, lv.min_gap(new_table, GAP_RATIO))

  new_index = lv.fractional_index(target, new_table)
  if not residual:
    new_index = lv.round_index(new_index, num_levels).astype(new_index.dtype)
  new_levels = new_table[:, num_levels // 2:] if symmetric else new_table
  return {
      INDEX: update_within_domain(
          params[INDEX], new_index.reshape(params[INDEX].shape), num_levels),
      level_name: new_levels - params[level_name],
  }


def project(params: dict) -> dict:
  """One DQ quantizer's parameters back in their domain (`dqnn.optim.project_dq_params`)."""
  symmetric = HALF_LEVELS in params
  table = level_table(params)
  num_groups, num_levels = table.shape
  index = lv.as_groups(jnp.nan_to_num(params[INDEX]), num_groups)
  clipped = jnp.clip(index, -0.5, num_levels - 0.5)
  if symmetric:
    table = lv.symmetrise(table)
  valid = jnp.all(jnp.diff(table, axis=-1) > 0, axis=-1) & jnp.all(jnp.isfinite(table), axis=-1)
  table = jnp.nan_to_num(table)
  new_table = jnp.where(valid[:, None], table,
                        lv.make_increasing(table, lv.min_gap(table, GAP_RATIO)))
  # Rows whose levels had to change: each weight keeps the value the network computed with
  # (its level before), re-expressed on the repaired levels. Valid rows keep their index.
  reexpressed = lv.fractional_index(lv.lookup(table, lv.round_index(clipped, num_levels)),
                                    new_table)
  new_index = jnp.where(valid, clipped, reexpressed).reshape(params[INDEX].shape)
  if symmetric:
    return {HALF_LEVELS: new_table[:, num_levels // 2:], INDEX: new_index}
  return {LEVELS: new_table, INDEX: new_index}


def outside_domain(params: dict) -> jax.Array:
  """Whether the levels are not strictly increasing or the index leaves `[-1/2, L-1/2]`
  (traced; what a training layer warns about)."""
  table = jax.lax.stop_gradient(level_table(params))
  index = jax.lax.stop_gradient(params[INDEX])
  return (jnp.any(jnp.diff(table, axis=-1) <= 0) | jnp.any(index < -0.5)
          | jnp.any(index > table.shape[-1] - 0.5) | ~jnp.all(jnp.isfinite(index)))


def level_counts(params: dict) -> dict:
  """How many weights use each entry of the level parameter (`levels` or `half_levels`)."""
  table = level_table(params)
  num_groups, num_levels = table.shape
  chosen = lv.round_index(lv.as_groups(params[INDEX], num_groups), num_levels)
  counts = lv.sum_by_level(jnp.ones(chosen.shape, table.dtype), chosen, num_levels)
  if HALF_LEVELS in params:
    return {HALF_LEVELS: _fold_half(counts, 1.0)}
  return {LEVELS: counts}


def _fold_half(table_values: jax.Array, sign: float) -> jax.Array:
  """A full-table quantity `(G, L)` onto the half table: `x[half:] + sign * x[:half][::-1]`."""
  half = table_values.shape[-1] // 2
  return table_values[:, half:] + sign * table_values[:, :half][:, ::-1]


def has_foreign_gradient(grads: dict, params: dict) -> jax.Array:
  """Whether one DQ quantizer's gradients are not those of the quantized forward pass.

  Through `w_q = levels[round(index)]` a level's gradient is the sum of the index gradients of
  the weights that use it. A term of the loss on the parameters themselves breaks that: an L2
  term adds `wd * levels` to the levels' gradient and `wd * index` to the index's.
  """
  table = level_table(params)
  num_groups, num_levels = table.shape
  chosen = lv.round_index(lv.as_groups(params[INDEX], num_groups), num_levels)
  index_grad = lv.as_groups(grads[INDEX], num_groups)
  expected = lv.sum_by_level(index_grad, chosen, num_levels)
  scale = lv.sum_by_level(jnp.abs(index_grad), chosen, num_levels)
  if HALF_LEVELS in params:
    level_grad = grads[HALF_LEVELS]
    expected, scale = _fold_half(expected, -1.0), _fold_half(scale, 1.0)
  else:
    level_grad = grads[LEVELS]
  return jnp.any(jnp.abs(level_grad - expected) > FOREIGN_GRADIENT_TOLERANCE * scale)
