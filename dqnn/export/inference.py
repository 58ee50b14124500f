"""Runs an exported model from its file alone: pure JAX over the header's op list.

Nothing here imports the model zoo or the quantizers: kernels are rebuilt by unpacking the
level indices and gathering from the level tables, activations are quantized by counting the
thresholds they exceed and taking that output value, and the ops mirror flax's arithmetic
(conv, dense and BatchNorm in the same operation order), so the logits equal the trained
model's eval-mode logits on the same backend.
"""
from typing import Any, Callable, Mapping

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

from dqnn.export.format import ExportedModel

# Up to this many thresholds one compare per threshold is cheapest; beyond (8 bits) bisection.
_COMPARE_MAX_THRESHOLDS = 15
_CONV_DIMENSIONS = ('NHWC', 'HWIO', 'NHWC')


def unpack_indices(packed: jax.Array, count: int, bits: int) -> jax.Array:
  """The `count` `bits`-bit indices of a little-endian bit stream (see docs/export_format.md)."""
  stream = (packed[:, None] >> jnp.arange(8, dtype=jnp.uint8)) & 1
  fields = stream.reshape(-1)[:count * bits].reshape(count, bits).astype(jnp.int32)
  return jnp.sum(fields << jnp.arange(bits, dtype=jnp.int32), axis=-1)


def kernel(spec: Mapping[str, Any], tensors: Mapping[str, jax.Array]) -> jax.Array:
  """A layer's kernel: stored float, or `levels[channel group, index]`."""
  if 'float' in spec:
    return tensors[spec['float']]
  shape, levels = tuple(spec['shape']), tensors[spec['levels']]
  indices = unpack_indices(tensors[spec['indices']], int(np.prod(shape)), spec['bits'])
  groups = indices.reshape(-1, levels.shape[0])
  return jnp.take_along_axis(levels.T, groups, axis=0).reshape(shape)


def _act_quantize(op, tensors, x):
  thresholds, values = tensors[op['thresholds']], tensors[op['values']]
  method = 'compare_all' if thresholds.shape[0] <= _COMPARE_MAX_THRESHOLDS else 'scan'
  # The number of thresholds below x is the index of its nearest level.
  level = jnp.searchsorted(thresholds, x.astype(jnp.float32), side='left', method=method)
  return values[level].astype(x.dtype)


def _linear(op, tensors, x):
  dtype = jnp.dtype(op['dtype'])
  x, w = jnp.asarray(x, dtype), jnp.asarray(kernel(op['kernel'], tensors), dtype)
  if op['op'] == 'conv':
    padding = op['padding'] if isinstance(op['padding'], str) else [tuple(p) for p in op['padding']]
    y = lax.conv_general_dilated(
        x, w, tuple(op['strides']), padding, lhs_dilation=tuple(op['lhs_dilation']),
        rhs_dilation=tuple(op['rhs_dilation']), dimension_numbers=_CONV_DIMENSIONS,
        feature_group_count=op['feature_group_count'])
  else:
    y = lax.dot_general(x, w, (((x.ndim - 1,), (0,)), ((), ())))
  if op['bias'] is not None:
    y = y + jnp.asarray(tensors[op['bias']], dtype)
  return y


def _batch_norm(op, tensors, x):
  # flax.linen.BatchNorm's eval arithmetic, in its order.
  y = x - tensors[op['mean']]
  mul = lax.rsqrt(tensors[op['var']] + op['epsilon'])
  if op['scale'] is not None:
    mul = mul * tensors[op['scale']]
  y = y * mul
  if op['bias'] is not None:
    y = y + tensors[op['bias']]
  return jnp.asarray(y, op['dtype'])


def _window(op):
  return ((1, *op['window'], 1), (1, *op['strides'], 1),
          ((0, 0), *[tuple(p) for p in op['padding']], (0, 0)))


def _max_pool(op, tensors, x):
  del tensors
  return lax.reduce_window(x, -jnp.inf, lax.max, *_window(op))


def _avg_pool(op, tensors, x):
  del tensors
  return lax.reduce_window(x, 0.0, lax.add, *_window(op)) / np.prod(op['window'])


def _slice(op, tensors, x):
  del tensors
  return lax.slice(x, (0, *op['start']), (x.shape[0], *op['limit']), (1, *op['strides']))


def _pad(op, tensors, x):
  del tensors
  return lax.pad(x, jnp.zeros((), x.dtype), [(0, 0, 0), *[tuple(p) for p in op['padding']]])


_UNARY: dict[str, Callable] = {
    'act_quantize': _act_quantize,
    'conv': _linear,
    'dense': _linear,
    'batch_norm': _batch_norm,
    'max_pool': _max_pool,
    'avg_pool': _avg_pool,
    'slice': _slice,
    'pad': _pad,
    'relu': lambda op, tensors, x: jax.nn.relu(x),
    'relu6': lambda op, tensors, x: jax.nn.relu6(x),
    'scale': lambda op, tensors, x: x * jnp.asarray(op['factor'], x.dtype),
    'global_avg_pool': lambda op, tensors, x: jnp.mean(x, axis=(1, 2)),
    'flatten': lambda op, tensors, x: x.reshape(x.shape[0], -1),
    'cast': lambda op, tensors, x: x.astype(op['dtype']),
}
OPS = tuple(_UNARY) + ('add',)


def forward(header: Mapping[str, Any], tensors: Mapping[str, jax.Array],
            images: jax.Array) -> jax.Array:
  """Logits of `images` (NHWC float) through the op list of `header`."""
  values = {0: images}
  for op in header['ops']:
    inputs = [values[i] for i in op['inputs']]
    if op['op'] == 'add':
      values[op['output']] = inputs[0] + inputs[1]
    elif op['op'] in _UNARY:
      values[op['output']] = _UNARY[op['op']](op, tensors, inputs[0])
    else:
      raise ValueError(f'Unknown op {op["op"]!r} in the export; known: {", ".join(OPS)}.')
  return values[header['output']]


def make_infer(exported: ExportedModel, *, jit: bool = True) -> Callable[[jax.Array], jax.Array]:
  """`images -> logits` for an exported model (the tensors go to the device once)."""
  header = exported.header
  tensors = {name: jnp.asarray(array) for name, array in exported.tensors.items()}

  def infer_fn(images):
    return forward(header, tensors, jnp.asarray(images))

  return jax.jit(infer_fn) if jit else infer_fn


def infer(exported: ExportedModel, images, *, jit: bool = True) -> jax.Array:
  """Logits of `images` (NHWC float32, as the model was trained on) from an exported model."""
  return make_infer(exported, jit=jit)(images)
