"""Initialising a quantized model from a float model's variables (`config.init_from`).

Every array of the quantized model is taken from the float model at the same path, except:
- a DQ weight quantizer at `<layer>/weight_quantizer/{levels|half_levels,index}` is fitted to the
  float kernel at `<layer>/kernel` with `dq_weight.params_from_kernel` (same bits, grouping and
  symmetry as the quantized model's own initialisation);
- a latent-weight baseline's `<layer>/weight_quantizer/kernel` copies `<layer>/kernel`;
- other quantizer parameters (activation levels, LSQ steps) keep their fresh initialisation,
  since the float model has none.
"""
from typing import Any, Mapping

import jax.numpy as jnp
import numpy as np

from dqnn.quantizers import dq_weight

_QUANTIZERS = ('weight_quantizer', 'act_quantizer')


class WarmStartError(ValueError):
  """The float model's variables do not fit the quantized model."""


def _get(tree: Mapping[str, Any], path: tuple[str, ...]):
  for key in path:
    if not isinstance(tree, Mapping) or key not in tree:
      return None
    tree = tree[key]
  return tree


def _fit_dq(target: dict, kernel: np.ndarray) -> dict:
  table = dq_weight.level_table(target)
  bits = int(np.log2(table.shape[-1]))
  fitted = dq_weight.params_from_kernel(
      jnp.asarray(kernel), bits, per_channel=table.shape[0] == kernel.shape[-1],
      symmetric=dq_weight.HALF_LEVELS in target)
  return {name: fitted[name].astype(target[name].dtype) for name in target}


def _transfer(target: Any, source: Mapping[str, Any], path: tuple[str, ...],
              problems: list[str]) -> Any:
  where = '/'.join(path)
  if dq_weight.is_dq_weight(target) and path[-1:] == ('weight_quantizer',):
    kernel = _get(source, path[:-1] + ('kernel',))
    if kernel is None or tuple(kernel.shape) != tuple(target[dq_weight.INDEX].shape):
      problems.append(f'{where}: needs a float kernel shaped '
                      f'{tuple(target[dq_weight.INDEX].shape)} at {"/".join(path[:-1])}/kernel')
      return target
    return _fit_dq(target, np.asarray(kernel))
  if isinstance(target, Mapping):
    return {key: _transfer(value, source, path + (key,), problems)
            for key, value in target.items()}
  latent = path[-2:] == ('weight_quantizer', 'kernel')
  value = _get(source, path[:-2] + ('kernel',) if latent else path)
  if value is None:
    if not any(q in path for q in _QUANTIZERS):
      problems.append(f'{where}: missing from the float model')
    return target
  if tuple(value.shape) != tuple(target.shape):
    problems.append(f'{where}: float model has {tuple(value.shape)}, this model '
                    f'{tuple(target.shape)}')
    return target
  return jnp.asarray(value, target.dtype)


def from_float(variables: Mapping[str, Any], float_variables: Mapping[str, Any]) -> dict:
  """`variables` ({'params', 'batch_stats', ...}) with weights taken from a float model."""
  problems = []
  result = dict(variables)
  for collection in ('params', 'batch_stats'):
    if collection in variables:
      result[collection] = _transfer(variables[collection], float_variables, (collection,),
                                     problems)
  if problems:
    raise WarmStartError('The float checkpoint does not fit this model:\n  '
                         + '\n  '.join(problems))
  return result
