"""Gradient-side transformations that run before the base optimizer."""
import functools
import warnings

import jax
import jax.numpy as jnp
import optax

from dqnn.optim.groups import decay_mask
from dqnn.optim.tree import map_quantizers, per_layer, quantizer_modules
from dqnn.quantizers import registry
from dqnn.variables import path_name


def weight_decay(weight_decay: float, *, float_kernels: bool = True
                 ) -> optax.GradientTransformation:
  """L2 weight decay on the weights the network computes with.

  DQ kernels (any quantizer with an `index` capability) get `wd * w_q` on their index gradient —
  decay on the quantized weight, in weight units, never on the index itself (which would drag
  every weight toward the lowest level).
  Float kernels (`decay_mask`) get `wd * kernel` unless `float_kernels=False` (when the user's
  loss or base optimizer already decays them). Biases, BatchNorm and quantizer parameters get
  none.
  """

  def update_fn(grads, state, params=None):
    if not weight_decay:
      return grads, state
    if params is None:
      raise ValueError('weight_decay needs the parameters: call update(grads, state, params).')

    def decay_on_weight(weight, g, p):
      index = registry.capability(p, 'index')
      return {**g, index: g[index] + weight_decay * weight(p)}

    grads = map_quantizers('weight', decay_on_weight, grads, params)
    if float_kernels:
      grads = jax.tree.map(lambda g, p, decay: g + weight_decay * p if decay else g,
                           grads, params, decay_mask(params))
    return grads, state

  return optax.GradientTransformation(lambda _: optax.EmptyState(), update_fn)


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
  """Warns once per layer whose DQ gradients are not those of the quantized forward pass (the
  quantizer's `foreign_gradient` capability). A reduction on the device; the host is called
  only to warn, so it works under `jit`, `shard_map` and `pmap`."""
  found, param_leaves, treedef = quantizer_modules(params, 'foreign_gradient')
  grad_leaves = treedef.flatten_up_to(grads)
  layers, flags = [], []
  for module_path, names, foreign_gradient in found:
    own = {name: param_leaves[position] for name, position in names.items()}
    own_grads = {name: grad_leaves[position] for name, position in names.items()}
    layers.append(path_name(module_path) or '<root>')
    flags.append(jnp.any(per_layer(foreign_gradient, own)(own_grads, own)))
  if flags:
    foreign = jnp.stack(flags)
    report = functools.partial(_report_foreign_gradients, tuple(layers))
    jax.lax.cond(jnp.any(foreign), lambda f: jax.debug.callback(report, f), lambda f: None,
                 foreign)


def normalize_level_gradients() -> optax.GradientTransformation:
  """Divides each level's gradient (a sum over its weights) by the number of its weights (the
  quantizer's `level_counts` capability).

  A level's summed gradient grows with the number of weights using it (thousands in a large
  layer); the mean is in the units of one weight's gradient, so a level moves like the average
  of its weights would, whatever the layer's size.
  """

  def update_fn(grads, state, params=None):
    if params is None:
      raise ValueError('normalize_level_gradients needs the parameters.')

    def normalise(level_counts, g, p):
      return {**g, **{name: g[name] / jnp.maximum(counts, 1.0)
                      for name, counts in level_counts(p).items()}}

    return map_quantizers('level_counts', normalise, grads, params), state

  return optax.GradientTransformation(lambda _: optax.EmptyState(), update_fn)
