"""MobileNetV2 (width 1.0, torchvision layout), for ImageNet and, with adapted strides, CIFAR.

Quantizer placement: the expansion 1x1 conv (and the final 1x1 conv) reads the previous
block's linear bottleneck, which can be negative, so its activation grid is signed. The
depthwise and projection convs read ReLU6 outputs, in [0, 6]. Depthwise convs are quantized
too; their DQ levels are per output channel, i.e. per depthwise filter. Residual additions stay
in float. torchvision's classifier dropout (p=0.2) is left out so the model needs no dropout rng.
"""
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from dqnn.models import building
from dqnn.models.policy import QuantPolicy

# (expansion t, output channels c, blocks n, first stride s), from the MobileNetV2 paper.
IMAGENET_BLOCKS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                   (6, 160, 3, 2), (6, 320, 1, 1))
# 32x32 inputs: the second stage does not downsample (and the stem neither, see `stem_strides`).
CIFAR_BLOCKS = IMAGENET_BLOCKS[:1] + ((6, 24, 2, 1),) + IMAGENET_BLOCKS[2:]


class InvertedResidual(nn.Module):
  """[1x1 expand, BN, ReLU6], 3x3 depthwise, BN, ReLU6, 1x1 project, BN (linear) [+ input]."""
  features: int
  strides: int
  expansion: int
  policy: QuantPolicy
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    hidden = x.shape[-1] * self.expansion
    y = x
    if self.expansion != 1:
      y = building.conv(self, 'expand', hidden, 1, a_signed=True)(y)
      y = nn.relu6(building.batch_norm(self, 'expand_bn', train)(y))
    y = building.conv(self, 'depthwise', hidden, 3, strides=self.strides, groups=hidden)(y)
    y = nn.relu6(building.batch_norm(self, 'depthwise_bn', train)(y))
    y = building.conv(self, 'project', self.features, 1)(y)
    y = building.batch_norm(self, 'project_bn', train)(y)
    if self.strides == 1 and x.shape[-1] == self.features:
      return x + y
    return y


class MobileNetV2(nn.Module):
  """Layer paths: `stem_conv`, `block{0..16}/{expand,depthwise,project}`, `last_conv`, `head`."""
  num_classes: int
  policy: QuantPolicy = QuantPolicy()
  blocks: Sequence[tuple[int, int, int, int]] = IMAGENET_BLOCKS
  stem_features: int = 32
  stem_strides: int = 2
  last_features: int = 1280
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    x = building.conv(self, 'stem_conv', self.stem_features, 3, strides=self.stem_strides,
                      role='first')(x)
    x = nn.relu6(building.batch_norm(self, 'stem_bn', train)(x))
    index = 0
    for expansion, features, num_blocks, strides in self.blocks:
      for repeat in range(num_blocks):
        x = InvertedResidual(features, strides if repeat == 0 else 1, expansion, self.policy,
                             self.dtype, name=f'block{index}')(x, train)
        index += 1
    x = building.conv(self, 'last_conv', self.last_features, 1, a_signed=True)(x)
    x = nn.relu6(building.batch_norm(self, 'last_bn', train)(x))
    return building.classifier_head(self, x)
