"""Which conv/dense layers a model calls, and on what shapes: traced, never run."""
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from dqnn.quantizers import FULL_PRECISION


def layer_calls(model: nn.Module, input_shape: tuple[int, ...], variables: Any | None = None):
  """`(module, input shape, output shape)` of each conv/dense call, for one `input_shape` (HWC)
  image; traced, not run. `variables` default to the abstract (eval_shape) initialisation.

  Returns (calls, variables).
  """
  images = jax.ShapeDtypeStruct((1, *input_shape), jnp.float32)
  if variables is None:
    variables = jax.eval_shape(functools.partial(model.init, train=False),
                               jax.random.key(0), images)
  calls, running = [], []

  def record(next_fun, args, kwargs, context):
    # QuantConv's __call__ calls nn.Conv's on the same module: count the outer call only.
    if (context.method_name != '__call__' or not isinstance(context.module, (nn.Conv, nn.Dense))
        or context.module in running):
      return next_fun(*args, **kwargs)
    running.append(context.module)
    out = next_fun(*args, **kwargs)
    running.pop()
    calls.append((context.module, args[0].shape, out.shape))
    return out

  def forward(variables, x):
    with nn.intercept_methods(record):
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
