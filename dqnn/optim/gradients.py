"""Gradient-side transformations that run before the base optimizer."""
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import optax

from dqnn.optim.direct_update import map_dq_weights
from dqnn.quantizers import dq_weight
from dqnn.quantizers import levels as lv


def _add_to_kernels(grads: Any, params: Any, weight_decay: float) -> Any:
  """Adds `weight_decay * kernel` to the gradient of every float leaf named 'kernel'."""
  if dq_weight.is_dq_weight(params):
    return grads
  if isinstance(params, Mapping):
    return {key: (grads[key] + weight_decay * value if key == 'kernel' and not isinstance(value, Mapping)
                  else _add_to_kernels(grads[key], value, weight_decay))
            for key, value in params.items()}
  return grads


def weight_decay(weight_decay: float) -> optax.GradientTransformation:
  """L2 weight decay on the weights the network computes with.

  Float kernels get `wd * kernel`; DQ kernels get `wd * w_q` on their index gradient — decay on
  the quantized weight, in weight units, never on the index itself (which would drag every
  weight toward the lowest level). Biases, BatchNorm and quantizer parameters get none.
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
    return _add_to_kernels(grads, params, weight_decay), state

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
