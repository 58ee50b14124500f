"""Builds an `ExportedModel` from a model and its trained variables.

Each quantized kernel becomes packed level indices plus its `(G, 2**bits)` level table: DQ
kernels store their own tables; latent-weight baselines (LQ-Nets, LSQ, DoReFa) store the
distinct values of their `w_q` per output channel. Each activation quantizer becomes a sorted
threshold vector and the values it outputs. Float kernels, biases and BatchNorm stay float32.
"""
import json
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import ml_collections
import numpy as np

from dqnn import quantizers
from dqnn import runs
from dqnn.export import folding
from dqnn.export import format as fmt
from dqnn.export import graph
from dqnn.layers import QuantizeActivation
from dqnn.quantizers import FULL_PRECISION, validate_params
from dqnn.quantizers import readout
from dqnn.variables import (ACT_QUANTIZER, BATCH_STATS, QUANTIZER, WEIGHT_QUANTIZER,
                            layer_variables, path_name)



class InvalidVariablesError(ValueError):
  """The variables are not a well-formed model (e.g. DQ levels not increasing)."""


def export_model(config: ml_collections.ConfigDict, variables: dict[str, Any], *,
                 fold_batch_norm: bool = False) -> fmt.ExportedModel:
  """The deployable form of `config`'s model with `variables` (eval mode).

  Raises `InvalidVariablesError` if a weight quantizer's parameters are malformed (its
  `validate` capability: DQ's levels or index).
  """
  try:
    validate_params(variables['params'])
  except ValueError as error:
    raise InvalidVariablesError(f'Refusing to export: {error}') from None
  model = runs.model_from_config(config)
  size = runs.image_size(config)
  # Batch 2, so that the batch axis is not mistaken for another axis of size 1.
  traced = graph.trace(model, variables, (2, size, size, 3))
  builder = _Builder(variables, first_free_value=1 + max(op['output'] for op in traced.ops))
  ops = []
  for op in traced.ops:
    if op['op'] == 'layer':
      ops.extend(builder.layer_ops(traced.layers[op['layer']], op['inputs'][0], op['output']))
    else:
      ops.append(op)
  header = {'model': config.model, 'config': config.to_dict(),
            'num_classes': runs.num_classes(config), 'input_shape': [size, size, 3],
            'output': traced.output, 'ops': ops, 'folded_batch_norm': {}}
  exported = fmt.ExportedModel(json.loads(json.dumps(header, default=_jsonable)),
                               builder.tensors)
  return folding.fold_batch_norm(exported) if fold_batch_norm else exported


def export_workdir(workdir: str, *, fold_batch_norm: bool = False) -> fmt.ExportedModel:
  config, variables = runs.read_workdir(workdir)
  return export_model(config, variables, fold_batch_norm=fold_batch_norm)


def _jsonable(value):
  if isinstance(value, (np.integer, np.floating)):
    return value.item()
  if isinstance(value, tuple):
    return list(value)
  return str(value)


class _Builder:
  """Turns intercepted layers into ops, collecting their tensors by name."""

  def __init__(self, variables, first_free_value: int):
    self.tensors = {}
    self._variables = variables
    # Ids for the values a layer creates inside itself (its quantized input).
    self._next_value = first_free_value

  def _vars(self, module: nn.Module, *sub: str) -> dict[str, dict]:
    return layer_variables(self._variables, (*module.path, *sub))

  def _add(self, name: str, array, dtype=np.float32) -> str:
    self.tensors[name] = np.asarray(array, dtype)
    return name

  def layer_ops(self, module: nn.Module, source: int, output: int) -> list[dict]:
    name = path_name(module.path)
    if isinstance(module, nn.BatchNorm):
      return [self._batch_norm(module, name, source, output)]
    if isinstance(module, QuantizeActivation):
      return [self._act_quantize(module.quantizer, module.bits, module.options, module.signed,
                                 self._vars(module, QUANTIZER), f'{name}/{QUANTIZER}',
                                 source, output)]
    ops = []
    a_bits = getattr(module, 'a_bits', FULL_PRECISION)
    if a_bits != FULL_PRECISION:
      quantized = self._next_value
      self._next_value += 1
      ops.append(self._act_quantize(module.act_quantizer, a_bits, module.act_options,
                                    module.a_signed, self._vars(module, ACT_QUANTIZER),
                                    f'{name}/{ACT_QUANTIZER}', source, quantized))
      source = quantized
    ops.append(self._linear(module, name, source, output))
    return ops

  def _batch_norm(self, module: nn.BatchNorm, name: str, source: int, output: int) -> dict:
    if module.axis not in (-1,) or module.axis_name is not None:
      raise graph.UnsupportedModelError(f'BatchNorm {name} normalises axis {module.axis}.')
    variables = self._vars(module)
    op = {'op': 'batch_norm', 'name': name, 'inputs': [source], 'output': output,
          'epsilon': float(module.epsilon), 'dtype': _dtype_name(module.dtype),
          'mean': self._add(f'{name}/mean', variables[BATCH_STATS]['mean']),
          'var': self._add(f'{name}/var', variables[BATCH_STATS]['var'])}
    for field in ('scale', 'bias'):
      op[field] = (self._add(f'{name}/{field}', variables['params'][field])
                   if field in variables['params'] else None)
    return op

  def _linear(self, module: nn.Module, name: str, source: int, output: int) -> dict:
    params = self._vars(module)['params']
    is_conv = isinstance(module, nn.Conv)
    op = {'op': 'conv' if is_conv else 'dense', 'name': name, 'inputs': [source],
          'output': output, 'dtype': _dtype_name(module.dtype),
          'bias': self._add(f'{name}/bias', params['bias']) if module.use_bias else None}
    if module.precision is not None:
      raise graph.UnsupportedModelError(f'{name} sets a matmul precision.')
    if is_conv:
      op.update(_conv_geometry(module, name))
    w_bits = getattr(module, 'w_bits', FULL_PRECISION)
    if w_bits == FULL_PRECISION:
      op['kernel'] = {'float': self._add(f'{name}/kernel', params['kernel']),
                      'shape': list(np.shape(params['kernel']))}
    else:
      table, indices = readout.kernel_levels(module, self._vars(module, WEIGHT_QUANTIZER))
      op['kernel'] = {'bits': w_bits, 'shape': list(indices.shape),
                      'levels': self._add(f'{name}/levels', table),
                      'indices': self._add(f'{name}/indices', fmt.pack_indices(indices, w_bits),
                                           np.uint8)}
    return op

  def _act_quantize(self, method, bits, options, signed, variables, name, source,
                    output) -> dict:
    quantizer = quantizers.activation_quantizer(method, bits, options, signed=signed)
    try:
      nominal, exact = readout.activation_levels(quantizer, variables)
    except readout.NoReadoutError as error:
      raise graph.UnsupportedModelError(f'{name}: {error}') from None
    # Each cell's output is whatever the quantizer makes of a point inside it: for DQ exactly the
    # value training computes (the levels summed up gap by gap), for the others their grid.
    values = quantizer.apply({k: v for k, v in variables.items() if v}, nominal)
    thresholds = (nominal[1:] + nominal[:-1]) / 2
    return {'op': 'act_quantize', 'name': name, 'inputs': [source], 'output': output,
            'bits': bits, 'exact': exact,
            'thresholds': self._add(f'{name}/thresholds', thresholds),
            'values': self._add(f'{name}/values', values)}


def _dtype_name(dtype) -> str:
  return jnp.dtype(dtype or jnp.float32).name


def _conv_geometry(module: nn.Conv, name: str) -> dict:
  """Strides, explicit padding, dilations and groups of a 2-D NHWC conv, as lax takes them."""
  kernel_size = tuple(module.kernel_size)
  if len(kernel_size) != 2 or not module.shared_weights:
    raise graph.UnsupportedModelError(f'{name}: only 2-D shared-weight convs export.')

  def pair(value):
    if value is None:
      return [1, 1]
    return [value, value] if isinstance(value, int) else list(value)

  padding = nn.linear.canonicalize_padding(module.padding, 2)
  if isinstance(padding, str) and padding not in ('SAME', 'VALID'):
    raise graph.UnsupportedModelError(f'{name}: {padding} padding does not export.')
  return {'strides': pair(module.strides),
          'padding': padding if isinstance(padding, str) else [list(p) for p in padding],
          'lhs_dilation': pair(module.input_dilation),
          'rhs_dilation': pair(module.kernel_dilation),
          'feature_group_count': module.feature_group_count}
