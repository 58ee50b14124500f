"""The direct quantized-weight update: an Optax transformation chained after any optimizer.

The base optimizer turns gradients into steps `u` (for `index`, in weight units) and `v` (for
the levels). For every DQ weight quantizer this transformation replaces them by
1. `t = s(index, levels) + u`           — gradient descent on the quantized weight itself;
2. `levels' = levels + v` (or a Lloyd refit of the levels to the targets), kept increasing;
3. `index' = s^-1(t, levels')`, rounded when `residual=False`;
and returns `index' - index`, `levels' - levels`. Other parameters pass through untouched.
"""
import jax
import jax.numpy as jnp
import optax

from dqnn.optim.tree import map_dq_weights
from dqnn.quantizers import dq_weight
from dqnn.quantizers import levels as lv

LEVEL_UPDATES = ('gradient', 'lloyd')


def _symmetrise(table):
  return (table - table[:, ::-1]) / 2


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
  symmetric = dq_weight.HALF_LEVELS in params
  table = dq_weight.level_table(params)
  num_groups, num_levels = table.shape
  index = lv.as_groups(params[dq_weight.INDEX], num_groups)
  target = lv.soft_value(index, table) + lv.as_groups(steps[dq_weight.INDEX], num_groups)

  level_name = dq_weight.HALF_LEVELS if symmetric else dq_weight.LEVELS
  new_table = dq_weight.level_table({level_name: params[level_name] + steps[level_name]})
  if level_update == 'lloyd':
    new_table = lv.lloyd_step(jnp.concatenate([target, -target]) if symmetric else target,
                              new_table)
  if symmetric:
    new_table = _symmetrise(new_table)
  new_table = lv.make_increasing(new_table, lv.min_gap(new_table, dq_weight.GAP_RATIO))

  new_index = lv.fractional_index(target, new_table)
  if not residual:
    new_index = lv.round_index(new_index, num_levels).astype(new_index.dtype)
  new_levels = new_table[:, num_levels // 2:] if symmetric else new_table
  return {
      dq_weight.INDEX: update_within_domain(
          params[dq_weight.INDEX], new_index.reshape(params[dq_weight.INDEX].shape), num_levels),
      level_name: new_levels - params[level_name],
  }


def direct_update(residual: bool = True, level_update: str = 'gradient'
                  ) -> optax.GradientTransformation:
  """Turns a base optimizer's steps into the direct quantized-weight update.

  Args:
    residual: keep the fractional part of the new index, so steps smaller than half a level gap
      accumulate; False rounds it (a strict projection onto the levels).
    level_update: 'gradient' moves the levels by the base optimizer's step; 'lloyd' then refits
      each level to the mean of the targets nearest to it (one k-means step).
  """
  if level_update not in LEVEL_UPDATES:
    raise ValueError(f'level_update must be one of {", ".join(LEVEL_UPDATES)}; got {level_update!r}.')

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError('direct_update needs the parameters: call update(updates, state, params).')
    step = lambda steps, p: direct_step(steps, p, residual=residual, level_update=level_update)
    return map_dq_weights(step, updates, params), state

  return optax.GradientTransformation(lambda _: optax.EmptyState(), update_fn)
