"""Pre-activation ResNet as LQ-Nets trains it (tensorpack's `preresnet` layout).

Blocks after the first of a stage start with BN+ReLU (`bn_preact`) and keep the un-activated
sum as identity shortcut. The first block of each stage takes the previous stage's output, which
already went through the stage-closing BN+ReLU (`bn_last`), or the stem's BN+ReLU; its
projection shortcut (a 1x1 conv, no BN) reads that same activated input. So every conv's input
is a BN+ReLU output, as the activation quantizers expect. Residual additions stay in float.
"""
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from dqnn.models import building
from dqnn.models.policy import QuantPolicy


class _PreActBlock(nn.Module):
  """Shared fields, pre-activation and shortcut of the pre-activation blocks."""
  features: int
  strides: int
  preact: bool
  policy: QuantPolicy
  dtype: Any = jnp.float32

  expansion = 1

  def _preactivate(self, x: jax.Array, train: bool) -> tuple[jax.Array, jax.Array]:
    """(conv input, shortcut input)."""
    if not self.preact:
      return x, x
    return nn.relu(building.batch_norm(self, 'bn_preact', train)(x)), x

  def _shortcut(self, x: jax.Array) -> jax.Array:
    out_features = self.features * self.expansion
    if x.shape[-1] == out_features and self.strides == 1:
      return x
    return building.conv(self, 'shortcut', out_features, 1, strides=self.strides)(x)


class PreActBasicBlock(_PreActBlock):
  """[BN+ReLU], 3x3 conv, BN+ReLU, 3x3 conv, + shortcut."""

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    y, shortcut = self._preactivate(x, train)
    y = building.conv(self, 'conv1', self.features, 3, strides=self.strides)(y)
    y = nn.relu(building.batch_norm(self, 'bn1', train)(y))
    y = building.conv(self, 'conv2', self.features, 3)(y)
    return y + self._shortcut(shortcut)


class PreActBottleneck(_PreActBlock):
  """[BN+ReLU], 1x1, BN+ReLU, 3x3 (strided), BN+ReLU, 1x1 expand by 4, + shortcut."""
  expansion = 4

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    y, shortcut = self._preactivate(x, train)
    y = building.conv(self, 'conv1', self.features, 1)(y)
    y = nn.relu(building.batch_norm(self, 'bn1', train)(y))
    y = building.conv(self, 'conv2', self.features, 3, strides=self.strides)(y)
    y = nn.relu(building.batch_norm(self, 'bn2', train)(y))
    y = building.conv(self, 'conv3', self.features * 4, 1)(y)
    return y + self._shortcut(shortcut)


class PreActStage(nn.Module):
  """`num_blocks` blocks (the first strides, without pre-activation), then BN+ReLU."""
  block_cls: type[_PreActBlock]
  num_blocks: int
  features: int
  strides: int
  policy: QuantPolicy
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    for index in range(self.num_blocks):
      first = index == 0
      x = self.block_cls(self.features, self.strides if first else 1, not first, self.policy,
                         self.dtype, name=f'block{index}')(x, train)
    return nn.relu(building.batch_norm(self, 'bn_last', train)(x))


class PreActResNet(nn.Module):
  """7x7/2 conv + BN+ReLU + max pool, pre-activation stages, average pool, dense.

  Layer paths: `stem_conv`, `stage{1..4}/block{0..}/{conv1,conv2,conv3,shortcut}`, `head`.
  """
  stage_sizes: Sequence[int]
  block_cls: type[_PreActBlock]
  num_classes: int
  policy: QuantPolicy = QuantPolicy()
  stage_features: Sequence[int] = (64, 128, 256, 512)
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    x = building.conv(self, 'stem_conv', self.stage_features[0], 7, strides=2, role='first')(x)
    x = building.max_pool_3x3(nn.relu(building.batch_norm(self, 'stem_bn', train)(x)))
    for index, (num_blocks, features) in enumerate(zip(self.stage_sizes, self.stage_features)):
      x = PreActStage(self.block_cls, num_blocks, features, 1 if index == 0 else 2, self.policy,
                      self.dtype, name=f'stage{index + 1}')(x, train)
    return building.classifier_head(self, x)
