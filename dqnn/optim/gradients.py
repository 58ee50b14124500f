"""Gradient-side transformations that run before the base optimizer."""
import functools
import warnings

import jax
import jax.numpy as jnp
import optax

from dqnn.optim.groups import decay_mask
from dqnn.optim.tree import is_dq_weight_module, leaves_by_module, map_dq_weights, per_layer
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


# The quantized forward pass gives each DQ level exactly the sum of its weights' index gradients
# (straight-through). A mismatch larger than this fraction of the summed magnitudes is a
# gradient from elsewhere; float rounding of the two sums is orders of magnitude smaller.
FOREIGN_GRADIENT_TOLERANCE = 1e-3


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
  table = dq_weight.level_table(params)
  num_groups, num_levels = table.shape
  chosen = lv.round_index(lv.as_groups(params[dq_weight.INDEX], num_groups), num_levels)
  index_grad = lv.as_groups(grads[dq_weight.INDEX], num_groups)
  expected = lv.sum_by_level(index_grad, chosen, num_levels)
  scale = lv.sum_by_level(jnp.abs(index_grad), chosen, num_levels)
  if dq_weight.HALF_LEVELS in params:
    level_grad = grads[dq_weight.HALF_LEVELS]
    expected, scale = _fold_half(expected, -1.0), _fold_half(scale, 1.0)
  else:
    level_grad = grads[dq_weight.LEVELS]
  return jnp.any(jnp.abs(level_grad - expected) > FOREIGN_GRADIENT_TOLERANCE * scale)


_warned: set[str] = set()


def _report_foreign_gradients(paths: tuple[str, ...], foreign) -> None:
  layers = [path for path, flag in zip(paths, foreign) if flag and path not in _warned]
  if layers:
    _warned.update(layers)
    warnings.warn(
        f'DQ weights at {", ".join(layers)} receive gradients that their quantized forward '
        f'pass does not produce (a level\'s gradient is not the sum of its weights\' index '
        f'gradients): typically an L2 term in the loss over every parameter, which decays the '
        f'DQ index (dragging weights to the lowest level) and the levels. Restrict that term to '
        f'the float kernels with dqnn.optim.decay_mask(params), and let '
        f'wrap_optimizer(..., weight_decay=...) decay the DQ weights on w_q.', stacklevel=2)


def warn_on_foreign_dq_gradients(grads, params) -> None:
  """Warns once per layer whose DQ gradients are not those of the quantized forward pass
  (`has_foreign_gradient`). A reduction on the device; the host is called only to warn, so it
  works under `jit`, `shard_map` and `pmap`."""
  _, param_leaves, treedef, modules = leaves_by_module(params)
  grad_leaves = treedef.flatten_up_to(grads)
  layers, flags = [], []
  for module_path, names in modules.items():
    if is_dq_weight_module(names):
      own = {name: param_leaves[position] for name, position in names.items()}
      own_grads = {name: grad_leaves[position] for name, position in names.items()}
      layers.append('/'.join(module_path) or '<root>')
      flags.append(jnp.any(per_layer(has_foreign_gradient, own)(own_grads, own)))
  if flags:
    foreign = jnp.stack(flags)
    report = functools.partial(_report_foreign_gradients, tuple(layers))
    jax.lax.cond(jnp.any(foreign), lambda f: jax.debug.callback(report, f), lambda f: None,
                 foreign)


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
