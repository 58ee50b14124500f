"""Restoring DQ's invariants after parameters were moved by something other than the direct
update (a plain Optax optimizer, L2 decay on every parameter, a hand edit)."""
from typing import Any

import jax.numpy as jnp

from dqnn.optim.tree import map_dq_weights
from dqnn.quantizers import dq_weight
from dqnn.quantizers import levels as lv


def _project(params: dict) -> dict:
  symmetric = dq_weight.HALF_LEVELS in params
  table = dq_weight.level_table(params)
  num_groups, num_levels = table.shape
  index = lv.as_groups(jnp.nan_to_num(params[dq_weight.INDEX]), num_groups)
  clipped = jnp.clip(index, -0.5, num_levels - 0.5)
  if symmetric:
    table = (table - table[:, ::-1]) / 2
  valid = jnp.all(jnp.diff(table, axis=-1) > 0, axis=-1) & jnp.all(jnp.isfinite(table), axis=-1)
  table = jnp.nan_to_num(table)
  new_table = jnp.where(valid[:, None], table,
                        lv.make_increasing(table, lv.min_gap(table, dq_weight.GAP_RATIO)))
  # Rows whose levels had to change: each weight keeps the value the network computed with
  # (its level before), re-expressed on the repaired levels. Valid rows keep their index.
  reexpressed = lv.fractional_index(lv.lookup(table, lv.round_index(clipped, num_levels)),
                                    new_table)
  new_index = jnp.where(valid, clipped, reexpressed).reshape(params[dq_weight.INDEX].shape)
  if symmetric:
    return {dq_weight.HALF_LEVELS: new_table[:, num_levels // 2:], dq_weight.INDEX: new_index}
  return {dq_weight.LEVELS: new_table, dq_weight.INDEX: new_index}


def project_dq_params(params: Any) -> Any:
  """`params` with every DQ weight quantizer's invariants restored; other leaves unchanged.

  Levels are sorted and pushed apart to the minimum gap (symmetric tables stay symmetric and
  their half levels positive); each index is clipped to `[-1/2, L-1/2]` (NaN to 0). Where a
  level row had to change, each weight keeps the quantized value it had, now as an index on
  the repaired row. Use it once on parameters a foreign optimizer has moved, then train with
  `wrap_optimizer`/`create_optimizer`, which keep the invariants by construction.
  """
  return map_dq_weights(lambda _, p: _project(p), params, params)
