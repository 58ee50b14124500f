"""Gradient-side transformations that run before the base optimizer."""
from typing import Any

import jax
import jax.numpy as jnp
import optax

from dqnn.optim.groups import decay_mask
from dqnn.optim.tree import map_dq_weights
from dqnn.quantizers import dq_weight
from dqnn.quantizers import levels as lv


def weight_decay(weight_decay: float, *, float_kernels: bool = True
                 ) -> optax.GradientTransformation:
  """L2 weight decay on the weights the network computes with.

  DQ kernels get `wd * w_q` on their index gradient — decay on the quantized weight, in weight
  units, never on the index itself (which would drag every weight toward the lowest level).
  Float kernels (`decay_mask`) get `wd * kernel` unless `float_kernels=False` (when the user's
  loss or base optimizer already decays them). Biases, BatchNorm and quantizer parameters get
  none.
  """

  def update_fn(grads, state, params=None):
    if not weight_decay:
      return grads, state
    if params is None:
      raise ValueError('weight_decay needs the parameters: call update(grads, state, params).')

    def decay_dq(g, p):
      decayed = g[dq_weight.INDEX] + weight_decay * dq_weight.quantized_weight(p)
      return {**g, dq_weight.INDEX: decayed}

    grads = map_dq_weights(decay_dq, grads, params)
    if float_kernels:
      grads = jax.tree.map(lambda g, p, decay: g + weight_decay * p if decay else g,
                           grads, params, decay_mask(params))
    return grads, state

  return optax.GradientTransformation(lambda _: optax.EmptyState(), update_fn)


def level_counts(params: dict) -> jax.Array:
  """How many weights use each entry of a DQ quantizer's level parameter (`levels` or half)."""
  table = dq_weight.level_table(params)
  num_groups, num_levels = table.shape
  chosen = lv.round_index(lv.as_groups(params[dq_weight.INDEX], num_groups), num_levels)
  counts = lv.sum_by_level(jnp.ones(chosen.shape, table.dtype), chosen, num_levels)
  if dq_weight.HALF_LEVELS in params:
    half = num_levels // 2
    return counts[:, half:] + counts[:, :half][:, ::-1]
  return counts


def normalize_level_gradients() -> optax.GradientTransformation:
  """Divides each level's gradient (a sum over its weights) by the number of its weights.

  A level's summed gradient grows with the number of weights using it (thousands in a large
  layer); the mean is in the units of one weight's gradient, so a level moves like the average
  of its weights would, whatever the layer's size.
  """

  def update_fn(grads, state, params=None):
    if params is None:
      raise ValueError('normalize_level_gradients needs the parameters.')

    def normalise(g, p):
      name = dq_weight.HALF_LEVELS if dq_weight.HALF_LEVELS in p else dq_weight.LEVELS
      return {**g, name: g[name] / jnp.maximum(level_counts(p), 1.0)}

    return map_dq_weights(normalise, grads, params), state

  return optax.GradientTransformation(lambda _: optax.EmptyState(), update_fn)
