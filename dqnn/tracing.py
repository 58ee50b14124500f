"""Intercepting a model's layer calls, and which conv/dense layers it calls on what shapes."""
import contextlib
import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from dqnn.quantizers import FULL_PRECISION


@contextlib.contextmanager
def intercept_layers(layer_types, on_layer: Callable[[nn.Module, Any, Callable[[], Any]], Any]):
  """Within the context, each call of a module of `layer_types` returns
  `on_layer(module, input, run)`, where `run()` makes the call itself. Only a layer's outer
  `__call__` counts: QuantConv's calls nn.Conv's on the same module."""
  running = []

  def intercept(next_fun, args, kwargs, context):
    if (context.method_name != '__call__' or not isinstance(context.module, layer_types)
        or context.module in running):
      return next_fun(*args, **kwargs)
    running.append(context.module)
    try:
      return on_layer(context.module, args[0], lambda: next_fun(*args, **kwargs))
    finally:
      running.pop()

  with nn.intercept_methods(intercept):
    yield


def layer_calls(model: nn.Module, input_shape: tuple[int, ...], variables: Any | None = None):
  """`(module, input shape, output shape)` of each conv/dense call, for one `input_shape` (HWC)
  image; traced, not run. `variables` default to the abstract (eval_shape) initialisation.

  Returns (calls, variables).
  """
  images = jax.ShapeDtypeStruct((1, *input_shape), jnp.float32)
  if variables is None:
    variables = jax.eval_shape(functools.partial(model.init, train=False),
                               jax.random.key(0), images)
  calls = []

  def record(module, x, run):
    out = run()
    calls.append((module, x.shape, out.shape))
    return out

  def forward(variables, x):
    with intercept_layers((nn.Conv, nn.Dense), record):
      return model.apply(variables, x, train=False)

  jax.eval_shape(forward, variables, images)
  return calls, variables


def quantized_layers(model: nn.Module, input_shape: tuple[int, ...],
                     variables: Any) -> list[tuple[nn.Module, tuple[int, ...]]]:
  """`(module, input shape)` of every conv/dense layer with quantized weights or inputs."""
  calls, _ = layer_calls(model, input_shape, variables)
  return [(module, in_shape) for module, in_shape, _ in calls
          if getattr(module, 'w_bits', FULL_PRECISION) != FULL_PRECISION
          or getattr(module, 'a_bits', FULL_PRECISION) != FULL_PRECISION]
