"""Records a flax model's eval-mode forward as a flat op list, by tracing it to a jaxpr.

Conv/Dense/BatchNorm modules (and standalone activation quantizers) are intercepted and
replaced by an opaque `dqnn_layer` primitive, so the jaxpr shows them as single equations; the
glue between them (ReLU, residual adds and scalar gains, pooling, the zero-padded shortcut,
flatten) is translated primitive by primitive. Anything else is an `UnsupportedModelError`
naming the primitive, so a model the runner cannot reproduce is never exported silently wrong.

Values are numbered: 0 is the input image; every op reads `inputs` and writes `output`.
"""
import dataclasses
from typing import Any

import flax.linen as nn
import jax
from jax.extend import core as jex_core
import numpy as np

from dqnn import tracing
from dqnn.layers import QuantizeActivation
from dqnn.quantizers import FULL_PRECISION

LAYER_TYPES = (nn.Conv, nn.Dense, nn.BatchNorm, QuantizeActivation)
# Element-wise functions the runner has as ops, by their jit name.
_NAMED_FUNCTIONS = {'relu': 'relu', 'relu6': 'relu6'}
_layer_p = jex_core.Primitive('dqnn_layer')
_layer_p.def_abstract_eval(
    lambda x, *, index, shape, dtype: jax.core.ShapedArray(shape, dtype))


class UnsupportedModelError(NotImplementedError):
  """The model's forward uses an operation the exported op list cannot express."""


class _Value(int):
  """A value id, told apart from integer constants in the jaxpr."""


@dataclasses.dataclass(frozen=True)
class _Pending:
  """A reduction whose meaning (global or window average) shows when it is divided."""
  kind: str
  value: int
  params: dict
  input_shape: tuple[int, ...]


@dataclasses.dataclass
class Trace:
  """`ops` (layers as `{'op': 'layer', 'layer': i}`), the intercepted `layers`, `output`."""
  ops: list[dict[str, Any]]
  layers: list[nn.Module]
  output: int


def trace(model: nn.Module, variables: Any, input_shape: tuple[int, ...]) -> Trace:
  """Traces `model.apply(variables, x, train=False)` for `x` of `input_shape` (batch first)."""
  layers = []

  def intercept(module, x, run):
    out = run()
    # A 32-bit QuantizeActivation passes its input through: no op.
    if getattr(module, 'bits', None) == FULL_PRECISION:
      return out
    # The real output only gives the shape; its equations are dead code in the jaxpr.
    layers.append(module)
    return _layer_p.bind(x, index=len(layers) - 1, shape=out.shape, dtype=out.dtype)

  def forward(x):
    with tracing.intercept_layers(LAYER_TYPES, intercept):
      return model.apply(variables, x, train=False)

  closed = jax.make_jaxpr(forward)(jax.ShapeDtypeStruct(input_shape, np.float32))
  translator = _Translator(layers)
  env = {var: const for var, const in zip(closed.jaxpr.constvars, closed.consts)}
  env[closed.jaxpr.invars[0]] = _Value(0)
  (output,) = translator.run(closed.jaxpr, env)
  if not isinstance(output, _Value):
    raise UnsupportedModelError('The model output does not depend on its input.')
  return Trace(translator.ops, layers, int(output))


def _live_equations(jaxpr) -> list:
  """The equations the outputs depend on (the traced layers' own computations are dead)."""
  live = {v for v in jaxpr.outvars if isinstance(v, jex_core.Var)}
  kept = []
  for eqn in reversed(jaxpr.eqns):
    if any(v in live for v in eqn.outvars):
      kept.append(eqn)
      live.update(v for v in eqn.invars if isinstance(v, jex_core.Var))
  return kept[::-1]


class _Translator:
  """Walks a jaxpr; environment entries are value ids (`_Value`), constants or `_Pending`."""

  def __init__(self, layers):
    self.ops = []
    self._layers = layers
    self._next_value = 1

  def emit(self, op: str, inputs: list[int], **fields) -> int:
    output = _Value(self._next_value)
    self._next_value += 1
    self.ops.append({'op': op, 'inputs': inputs, 'output': output, **fields})
    return output

  def run(self, jaxpr, env: dict) -> list:
    for eqn in _live_equations(jaxpr):
      args = [v.val if isinstance(v, jex_core.Literal) else env[v] for v in eqn.invars]
      outs = self._equation(eqn, args)
      for var, out in zip(eqn.outvars, outs):
        env[var] = out
    return [v.val if isinstance(v, jex_core.Literal) else env[v] for v in jaxpr.outvars]

  def _inline(self, closed, args) -> list:
    return self.run(closed.jaxpr, {**dict(zip(closed.jaxpr.constvars, closed.consts)),
                                   **dict(zip(closed.jaxpr.invars, args))})

  def _equation(self, eqn, args) -> list:
    name, params = eqn.primitive.name, eqn.params
    values = [a for a in args if isinstance(a, _Value)]
    if not values and not any(isinstance(a, _Pending) for a in args):
      # Constants only (padding values, broadcast scalars): evaluate now.
      return list(eqn.primitive.bind(*args, **params) if eqn.primitive.multiple_results
                  else [eqn.primitive.bind(*args, **params)])
    if name == 'dqnn_layer':
      return [self.emit('layer', values, layer=params['index'])]
    if name in ('jit', 'pjit'):
      if params['name'] in _NAMED_FUNCTIONS and len(values) == 1:
        return [self.emit(_NAMED_FUNCTIONS[params['name']], values)]
      return self._inline(params['jaxpr'], args)
    if name in ('custom_jvp_call', 'custom_vjp_call', 'custom_vjp_call_jaxpr', 'closed_call'):
      closed = params.get('call_jaxpr') or params.get('fun_jaxpr')
      return self._inline(closed, args)
    x = args[0]
    shape = tuple(eqn.invars[0].aval.shape)
    if name == 'add' and len(values) == 2:
      return [self.emit('add', values)]
    if name == 'mul' and len(values) == 1 and len(args) == 2:
      factor = args[1] if isinstance(args[0], _Value) else args[0]
      if not isinstance(factor, _Pending) and np.ndim(factor) == 0:  # A learned scalar gain.
        return [self.emit('scale', values, factor=float(factor))]
    if name == 'max' and len(values) == 1 and _is_scalar(args[1], 0):
      return [self.emit('relu', values)]
    if name == 'reduce_window_max' and isinstance(x, _Value):
      return [self.emit('max_pool', [x], **_window(params, shape, name))]
    if name == 'reduce_window_sum' and isinstance(x, _Value):
      return [_Pending('window_sum', x, _window(params, shape, name), shape)]
    if name == 'reduce_sum' and isinstance(x, _Value):
      return [_Pending('sum', x, {'axes': tuple(params['axes'])}, shape)]
    if name == 'div' and isinstance(x, _Pending) and np.ndim(args[1]) == 0:
      return [self._average(x, float(args[1]))]
    if name == 'reshape' and isinstance(x, _Value):
      new_shape = tuple(params['new_sizes'])
      if len(new_shape) == 2 and new_shape[0] == shape[0]:
        return [self.emit('flatten', [x])]
    if name == 'slice' and isinstance(x, _Value) and params['start_indices'][0] == 0 and (
        params['limit_indices'][0] == shape[0]):
      strides = params['strides'] or (1,) * len(shape)
      if strides[0] == 1:
        return [self.emit('slice', [x], start=list(params['start_indices'][1:]),
                          limit=list(params['limit_indices'][1:]), strides=list(strides[1:]))]
    if name == 'pad' and isinstance(x, _Value) and _is_scalar(args[1], 0) and (
        tuple(params['padding_config'][0]) == (0, 0, 0)):
      return [self.emit('pad', [x], padding=[list(p) for p in params['padding_config'][1:]])]
    if name == 'convert_element_type' and isinstance(x, _Value):
      if np.dtype(params['new_dtype']) == eqn.invars[0].aval.dtype:
        return [x]
      return [self.emit('cast', [x], dtype=np.dtype(params['new_dtype']).name)]
    raise UnsupportedModelError(
        f'The export op list cannot express the primitive {name!r} ({eqn}); supported: '
        'conv, dense, batch norm, activation quantizers, relu, relu6, add, scaling by a '
        'scalar, max/avg pooling, global average pooling, flatten, strided slice, zero '
        'padding.')

  def _average(self, pending: _Pending, divisor: float) -> int:
    shape = pending.input_shape
    if pending.kind == 'sum' and pending.params['axes'] == (1, 2) and len(shape) == 4 and (
        divisor == shape[1] * shape[2]):
      return self.emit('global_avg_pool', [pending.value])
    window = pending.params.get('window', ())
    if pending.kind == 'window_sum' and divisor == np.prod(window):
      return self.emit('avg_pool', [pending.value], **pending.params)
    raise UnsupportedModelError(f'A {pending.kind} over {pending.params} divided by {divisor} '
                                'is neither a global nor a window average.')


def _is_scalar(value, expected: float) -> bool:
  return not isinstance(value, (_Value, _Pending)) and np.ndim(value) == 0 and (
      float(value) == expected)


def _window(params: dict, shape: tuple[int, ...], name: str) -> dict:
  """Window, strides and padding over the spatial axes of an NHWC reduce_window."""
  dims, strides = params['window_dimensions'], params['window_strides']
  padding = [tuple(p) for p in params['padding']]
  trivial = (dims[0], dims[-1], strides[0], strides[-1]) == (1, 1, 1, 1) and (
      padding[0] == padding[-1] == (0, 0)) and len(shape) == 4 and all(
          d == 1 for d in params['base_dilation'] + params['window_dilation'])
  if not trivial:
    raise UnsupportedModelError(f'{name} over batch or channel axes, or dilated: {params}.')
  return {'window': list(dims[1:3]), 'strides': list(strides[1:3]),
          'padding': [list(p) for p in padding[1:3]]}
