"""AlexNet with BatchNorm, the variant low-bit papers train (HWGQ, Cai et al. 2017; LQ-Nets).

Krizhevsky's five convs with the single-tower channel widths 96-256-384-384-256 (the original
two-GPU model split conv2/4/5 into two groups; the one-tower version drops the groups, as
Caffe's `bvlc_alexnet` without groups), then FC 4096-4096-classes. BN follows every conv and
every hidden FC, so those layers have no bias; there is no LRN and no dropout (BN replaces
both). Every conv/dense input is a ReLU output (max pooling keeps it non-negative).
"""
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from dqnn.models import building
from dqnn.models.policy import QuantPolicy

CONV_FEATURES = (96, 256, 384, 384, 256)


class AlexNet(nn.Module):
  """`stem='imagenet'`: 11x11/4 conv1 and 3x3/2 pools (224 -> 6x6x256 = 9216 features).

  `stem='cifar'`: 3x3/1 conv1, 5x5 conv2 and 2x2/2 pools (32 -> 4x4x256 = 4096 features); with
  `hidden_features=1024`, our CIFAR choice, as no single CIFAR AlexNet is standard.
  Layer paths: `conv1` (first), `conv2..5`, `fc6`, `fc7`, `head` (last).
  """
  num_classes: int
  policy: QuantPolicy = QuantPolicy()
  conv_features: Sequence[int] = CONV_FEATURES
  hidden_features: int = 4096
  stem: str = 'imagenet'
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    imagenet = self.stem == 'imagenet'
    if imagenet:
      pool = lambda y: nn.max_pool(y, (3, 3), strides=(2, 2))
      kernels, strides, pads = (11, 5, 3, 3, 3), (4, 1, 1, 1, 1), (2, 2, 1, 1, 1)
    else:
      pool = lambda y: nn.max_pool(y, (2, 2), strides=(2, 2))
      kernels, strides, pads = (3, 5, 3, 3, 3), (1, 1, 1, 1, 1), (1, 2, 1, 1, 1)
    for index, features in enumerate(self.conv_features):
      name = f'conv{index + 1}'
      x = building.conv(self, name, features, kernels[index], strides=strides[index],
                        padding=pads[index], role='first' if index == 0 else 'body')(x)
      x = nn.relu(building.batch_norm(self, f'{name}_bn', train)(x))
      if index in (0, 1, 4):
        x = pool(x)
    x = x.reshape(x.shape[0], -1)
    for name in ('fc6', 'fc7'):
      x = building.dense(self, name, self.hidden_features, use_bias=False)(x)
      x = nn.relu(building.batch_norm(self, f'{name}_bn', train)(x))
    return jnp.asarray(building.dense(self, 'head', self.num_classes, role='last')(x), jnp.float32)
