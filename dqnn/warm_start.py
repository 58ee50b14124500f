"""Initialising a quantized model from a float model's variables (`config.init_from`).

Every array of the quantized model is taken from the float model at the same path, except:
- a weight quantizer with a `fit` capability at `<layer>/weight_quantizer` (DQ's
  `{levels|half_levels,index}`) is fitted to the float kernel at `<layer>/kernel` (DQ: k-means,
  with the same bits, grouping and symmetry as the quantized model's own initialisation);
- a latent-weight baseline's `<layer>/weight_quantizer/kernel` copies `<layer>/kernel`;
- every other quantizer variable (activation levels and clips, LSQ steps, LQ-Nets bases, the
  `latent_levels` control's levels) has no float counterpart: it is initialised afresh by running the quantized model, float weights in
  place, on a batch (`calibrate`). Ranges fitted to a randomly initialised network instead can be
  off by orders of magnitude (they grow layer by layer), and a learned range moving at a
  fine-tune's small learning rate never recovers from that.
"""
from typing import Any, Mapping

import flax
import jax
import jax.numpy as jnp
import numpy as np

from dqnn import optim
from dqnn.quantizers import capability
from dqnn.variables import BATCH_STATS, COLLECTIONS, PARAMS, WEIGHT_QUANTIZER, path_name, subtree

_FLOAT_COLLECTIONS = (PARAMS, BATCH_STATS)  # What a float model has.


class WarmStartError(ValueError):
  """The float model's variables do not fit the quantized model."""


_UNSET = object()  # A quantizer variable with no float counterpart: `calibrate` sets it.


def _transfer(target: Any, source: Mapping[str, Any], path: tuple[str, ...],
              problems: list[str], quantizer_params: set[tuple[str, ...]]) -> Any:
  where = path_name(path)
  fit = capability(target, 'fit') if path[-1:] == (WEIGHT_QUANTIZER,) else None
  if fit is not None:
    shape = tuple(jax.eval_shape(capability(target, 'weight'), target).shape)
    kernel = subtree(source, path[:-1] + ('kernel',))
    if kernel is None or tuple(kernel.shape) != shape:
      problems.append(f'{where}: needs a float kernel shaped {shape} at '
                      f'{path_name((*path[:-1], "kernel"))}')
      return target
    return fit(target, np.asarray(kernel))
  if isinstance(target, Mapping):
    children = {key: _transfer(value, source, path + (key,), problems, quantizer_params)
                for key, value in target.items()}
    return {key: value for key, value in children.items() if value is not _UNSET}
  latent = path[-2:] == (WEIGHT_QUANTIZER, 'kernel')
  value = subtree(source, path[:-2] + ('kernel',) if latent else path)
  if value is None:
    if path not in quantizer_params:
      problems.append(f'{where}: missing from the float model')
    return _UNSET
  if tuple(value.shape) != tuple(target.shape):
    problems.append(f'{where}: float model has {tuple(value.shape)}, this model '
                    f'{tuple(target.shape)}')
    return target
  return jnp.asarray(value, target.dtype)


def transfer(variables: Mapping[str, Any], float_variables: Mapping[str, Any]) -> dict:
  """`variables` ({'params', 'batch_stats', ...}) with weights taken from a float model.

  Quantizer variables without a float counterpart are left out (every collection other than
  `params` and `batch_stats` holds only such variables); `calibrate` initialises them.
  """
  problems = []
  result = {}
  # Quantizer parameters (clips, steps, activation levels, levels of quantizers without `fit`,
  # which `_transfer` fits), whatever their module is named: left to `calibrate`.
  groups = flax.traverse_util.flatten_dict(
      flax.core.unfreeze(optim.parameter_groups(variables.get('params', {}))))
  quantizer_params = {('params',) + path for path, group in groups.items()
                      if group in ('quantizer', 'levels')}
  for collection in _FLOAT_COLLECTIONS:
    if collection in variables:
      result[collection] = _transfer(variables[collection], float_variables, (collection,),
                                     problems, quantizer_params)
  if problems:
    raise WarmStartError('The float checkpoint does not fit this model:\n  '
                         + '\n  '.join(problems))
  return result


def calibrate(model, variables: Mapping[str, Any], images: jax.Array, rng: jax.Array) -> dict:
  """Initialises the variables missing from `variables` on `images`, the others held fixed.

  The model runs as in training (BatchNorm on batch statistics); only the missing entries are
  taken from that run, so BatchNorm statistics and given parameters come back unchanged.
  """
  _, fresh = model.apply(variables, images, train=True, mutable=list(COLLECTIONS),
                         rngs={'params': rng})
  merged = flax.traverse_util.flatten_dict(flax.core.unfreeze(fresh))
  merged.update(flax.traverse_util.flatten_dict(flax.core.unfreeze(variables)))
  merged = flax.traverse_util.unflatten_dict(merged)
  return {collection: merged.get(collection, {}) for collection in COLLECTIONS}


def from_float(model, variables: Mapping[str, Any], float_variables: Mapping[str, Any],
               images: jax.Array, rng: jax.Array) -> dict:
  """The quantized model's variables initialised from a float model (module docstring)."""
  return calibrate(model, transfer(variables, float_variables), images, rng)
