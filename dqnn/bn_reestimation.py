"""BatchNorm re-estimation: running statistics recomputed for the final quantized network.

A BatchNorm layer's running mean and variance are moving averages over steps whose weights and
quantization levels kept changing; quantized weights that flip between levels make them lag the
network that is finally evaluated. Re-estimation replaces them with the mean of the per-batch
statistics of the final network over a few training batches: each BatchNorm normalises with its
batch's statistics (as in training) while every quantizer runs as in evaluation (its levels
fixed), so the statistics are those of the network that will be evaluated and exported.
"""
import functools
from typing import Any, Callable, Iterable

import flax.linen as nn
import jax
import jax.numpy as jnp

from dqnn import tracing
from dqnn.variables import BATCH_STATS, path_name


def _batch_statistics(module: nn.BatchNorm, x: jax.Array, record: dict) -> jax.Array:
  """Normalises `x` with its own statistics and records them under the module's path."""
  axes = tuple(range(x.ndim - 1))
  x32 = x.astype(jnp.float32)
  mean = x32.mean(axes)
  var = jnp.maximum((x32 * x32).mean(axes) - mean * mean, 0.0)  # As flax.linen.BatchNorm.
  record[tuple(module.path)] = {'mean': mean, 'var': var}
  y = (x32 - mean) * jax.lax.rsqrt(var + module.epsilon)
  params = module.variables.get('params', {})
  if module.use_scale:
    y = y * params['scale']
  if module.use_bias:
    y = y + params['bias']
  return y.astype(module.dtype or x.dtype)


def batch_statistics(model: nn.Module, variables: dict[str, Any],
                     images: jax.Array) -> dict[tuple[str, ...], dict[str, jax.Array]]:
  """Per-BatchNorm `{path: {'mean', 'var'}}` of one batch through the evaluation-mode network
  whose BatchNorms use batch statistics (see the module docstring)."""
  record = {}
  with tracing.intercept_layers(
      (nn.BatchNorm,), lambda module, x, run: _batch_statistics(module, x, record)):
    model.apply(variables, images, train=False)
  return record


def _set(tree: dict, path: tuple[str, ...], value: dict) -> dict:
  if not path:
    return value
  return {**tree, path[0]: _set(tree.get(path[0], {}), path[1:], value)}


def reestimate(model: nn.Module, variables: dict[str, Any], batches: Iterable[jax.Array],
               statistics_fn: Callable | None = None) -> dict[str, Any]:
  """`variables` with every BatchNorm's running statistics replaced by the mean of its batch
  statistics over `batches` (standardised images). `statistics_fn(variables, images)` defaults
  to `batch_statistics` jitted; pass one with explicit shardings for a mesh."""
  statistics_fn = statistics_fn or jax.jit(functools.partial(batch_statistics, model))
  totals, count = None, 0
  for images in batches:
    stats = statistics_fn(variables, images)
    totals = stats if totals is None else jax.tree.map(jnp.add, totals, stats)
    count += 1
  if not count:
    raise ValueError('BatchNorm re-estimation needs at least one batch.')
  stats = variables.get(BATCH_STATS, {})
  known = {path for path, _ in _paths(stats)}
  for path, value in totals.items():
    if path not in known:
      raise ValueError(f'BatchNorm {path_name(path)} has no running statistics to replace.')
    stats = _set(stats, path, jax.tree.map(lambda total: total / count, value))
  return {**variables, BATCH_STATS: stats}


def _paths(tree: dict, prefix: tuple[str, ...] = ()):
  """`(path, leaf dict)` of every `{'mean', 'var'}` entry of a batch_stats tree."""
  if 'mean' in tree and 'var' in tree:
    yield prefix, tree
    return
  for key, value in tree.items():
    yield from _paths(value, (*prefix, key))
