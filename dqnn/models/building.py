"""Layer constructors shared by the models: policy-driven QuantConv/QuantDense, BatchNorm, pooling.

Each constructor is called inside a model module's compact method with that module as `parent`;
the layer's path (parent's path + `name`) picks its bits from `parent.policy`.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp

from dqnn.layers import QuantConv, QuantDense
from dqnn.variables import path_name

# torchvision's conv init (Kaiming normal, fan_out, not truncated).
CONV_INIT = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')
# 'none': no BatchNorm anywhere, so every quantizer sees its layer's raw output scale.
NORMALIZATIONS = ('batch', 'none')


def _quant_kwargs(parent: nn.Module, name: str, role: str) -> dict:
  return parent.policy.layer_kwargs(path_name((*parent.path, name)), role)


def conv(parent: nn.Module, name: str, features: int, kernel_size: int, *, strides: int = 1,
         padding: int | None = None, role: str = 'body', groups: int = 1,
         a_signed: bool = False, use_bias: bool = False) -> QuantConv:
  """A square conv padded symmetrically (torchvision: kernel_size // 2); bias-free by default,
  as BatchNorm follows it."""
  pad = kernel_size // 2 if padding is None else padding
  return QuantConv(features, (kernel_size, kernel_size), strides=strides,
                   padding=((pad, pad), (pad, pad)), feature_group_count=groups, use_bias=use_bias,
                   kernel_init=CONV_INIT, dtype=parent.dtype, a_signed=a_signed, name=name,
                   **_quant_kwargs(parent, name, role))


def dense(parent: nn.Module, name: str, features: int, *, role: str = 'body',
          use_bias: bool = True) -> QuantDense:
  """A dense layer whose bits follow the policy."""
  return QuantDense(features, use_bias=use_bias, dtype=parent.dtype, name=name,
                    **_quant_kwargs(parent, name, role))


def batch_norm(parent: nn.Module, name: str, train: bool) -> nn.BatchNorm:
  return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                      dtype=parent.dtype, name=name)


def check_normalization(normalization: str) -> None:
  if normalization not in NORMALIZATIONS:
    raise ValueError(f'normalization must be one of {", ".join(NORMALIZATIONS)}; '
                     f'got {normalization!r}.')


def conv_norm(parent: nn.Module, name: str, norm_name: str, x: jax.Array, train: bool,
              features: int, kernel_size: int, *, strides: int = 1,
              role: str = 'body') -> jax.Array:
  """Conv `name`, then BatchNorm `norm_name`; when `parent.normalization` is 'none', a conv
  with a bias and no BatchNorm."""
  unnormalized = parent.normalization == 'none'
  x = conv(parent, name, features, kernel_size, strides=strides, role=role,
           use_bias=unnormalized)(x)
  return x if unnormalized else batch_norm(parent, norm_name, train)(x)


def max_pool_3x3(x: jax.Array) -> jax.Array:
  """torchvision's 3x3 stride-2 max pool with padding 1."""
  return nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))


def classifier_head(parent: nn.Module, x: jax.Array) -> jax.Array:
  """Global average pool, then the last (policy role 'last') dense; float32 logits for the loss."""
  x = jnp.mean(x, axis=(1, 2))
  return jnp.asarray(dense(parent, 'head', parent.num_classes, role='last')(x), jnp.float32)
