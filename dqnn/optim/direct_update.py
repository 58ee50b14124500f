"""The quantizers' own update rules: an Optax transformation chained after any optimizer.

The base optimizer turns gradients into steps. For every weight quantizer that declares an
`update` capability (`dqnn.quantizers.WeightCapabilities`) this transformation replaces its
steps by what that rule makes of them (DQ: the direct update of
`dqnn.quantizers.dq_weight_update`). Other parameters pass through untouched.
"""
import optax

from dqnn.optim.tree import map_quantizers

LEVEL_UPDATES = ('gradient', 'lloyd')


def direct_update(residual: bool = True, level_update: str = 'gradient'
                  ) -> optax.GradientTransformation:
  """Turns a base optimizer's steps into each quantizer's own update (DQ: the direct update).

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
    step = lambda update, steps, p: update(steps, p, residual=residual, level_update=level_update)
    return map_quantizers('update', step, updates, params), state

  return optax.GradientTransformation(lambda _: optax.EmptyState(), update_fn)
