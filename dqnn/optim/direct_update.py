"""The direct quantized-weight update: an Optax transformation chained after any optimizer.

The base optimizer turns gradients into steps `u` (for `index`, in weight units) and `v` (for
the levels). For every DQ weight quantizer this transformation replaces them by
1. `t = s(index, levels) + u`           — gradient descent on the quantized weight itself;
2. `levels' = levels + v` (or a Lloyd refit of the levels to the targets), kept increasing;
3. `index' = s^-1(t, levels')`, rounded when `residual=False`;
and returns `index' - index`, `levels' - levels`. Other parameters pass through untouched.
"""
from typing import Any, Callable, Mapping

import jax.numpy as jnp
import optax

from dqnn.quantizers import dq_weight
from dqnn.quantizers import levels as lv

LEVEL_UPDATES = ('gradient', 'lloyd')


def map_dq_weights(fn: Callable[..., dict], tree: Any, params: Any) -> Any:
  """Replaces each DQ weight quantizer's subtree of `tree` by `fn(subtree, its params)`."""
  if dq_weight.is_dq_weight(params):
    return fn(tree, params)
  if isinstance(params, Mapping):
    return {key: map_dq_weights(fn, tree[key], params[key]) for key in params}
  return tree


def _symmetrise(table):
  return (table - table[:, ::-1]) / 2


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
      dq_weight.INDEX: new_index.reshape(params[dq_weight.INDEX].shape) - params[dq_weight.INDEX],
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
