"""ResNet v1 (torchvision layout, stride on the 3x3 conv as in v1.5), for ImageNet and CIFAR.

Every conv's input is a BN+ReLU output: the block input is the previous block's post-ReLU
output, so conv1 and the projection shortcut quantize non-negative inputs. Residual additions
stay in float.

`normalization='none'` drops every BatchNorm, so each quantizer sees its layer's raw output
scale: convs get biases, and each residual branch is multiplied by a learned scalar that starts
at 0 (SkipInit, De & Smith 2020), so every block starts as the identity and the network trains
without normalization.
"""
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from dqnn.models import building
from dqnn.models.policy import QuantPolicy

SHORTCUTS = ('projection', 'zero_pad')


def zero_pad_shortcut(x: jax.Array, features: int, strides: int) -> jax.Array:
  """He et al.'s option A: subsample, then zero-pad the new channels; no parameters."""
  x = x[:, ::strides, ::strides, :]
  extra = features - x.shape[-1]
  return jnp.pad(x, ((0, 0), (0, 0), (0, 0), (extra // 2, extra - extra // 2)))


class _Block(nn.Module):
  """Shared fields and shortcut of the residual blocks."""
  features: int
  strides: int
  policy: QuantPolicy
  shortcut: str = 'projection'
  dtype: Any = jnp.float32
  normalization: str = 'batch'

  expansion = 1

  def _merge(self, branch: jax.Array, x: jax.Array, train: bool) -> jax.Array:
    """ReLU(branch + shortcut); without normalization the branch is scaled by SkipInit's gain."""
    if self.normalization == 'none':
      gain = self.param('skip_gain', nn.initializers.zeros, (), jnp.float32)
      branch = branch * jnp.asarray(gain, self.dtype)
    return nn.relu(branch + self._shortcut(x, train))

  def _shortcut(self, x: jax.Array, train: bool) -> jax.Array:
    out_features = self.features * self.expansion
    if x.shape[-1] == out_features and self.strides == 1:
      return x
    if self.shortcut == 'zero_pad':
      return zero_pad_shortcut(x, out_features, self.strides)
    return building.conv_norm(self, 'shortcut', 'shortcut_bn', x, train, out_features, 1,
                              strides=self.strides)


class BasicBlock(_Block):
  """Two 3x3 convs."""

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    y = nn.relu(building.conv_norm(self, 'conv1', 'bn1', x, train, self.features, 3,
                                   strides=self.strides))
    y = building.conv_norm(self, 'conv2', 'bn2', y, train, self.features, 3)
    return self._merge(y, x, train)


class Bottleneck(_Block):
  """1x1 reduce, 3x3 (strided), 1x1 expand by 4."""
  expansion = 4

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    y = nn.relu(building.conv_norm(self, 'conv1', 'bn1', x, train, self.features, 1))
    y = nn.relu(building.conv_norm(self, 'conv2', 'bn2', y, train, self.features, 3,
                                   strides=self.strides))
    y = building.conv_norm(self, 'conv3', 'bn3', y, train, self.features * 4, 1)
    return self._merge(y, x, train)


class Stage(nn.Module):
  """`num_blocks` residual blocks; the first one strides."""
  block_cls: type[_Block]
  num_blocks: int
  features: int
  strides: int
  policy: QuantPolicy
  shortcut: str = 'projection'
  dtype: Any = jnp.float32
  normalization: str = 'batch'

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    for index in range(self.num_blocks):
      x = self.block_cls(self.features, self.strides if index == 0 else 1, self.policy,
                         self.shortcut, self.dtype, self.normalization,
                         name=f'block{index}')(x, train)
    return x


class ResNet(nn.Module):
  """ResNet v1. `stem='imagenet'`: 7x7/2 conv + max pool; `'cifar'`: 3x3/1 conv, no pool.

  Layer paths: `stem_conv`, `stage{1..}/block{0..}/{conv1,conv2,conv3,shortcut}`, `head`.
  """
  stage_sizes: Sequence[int]
  block_cls: type[_Block]
  num_classes: int
  policy: QuantPolicy = QuantPolicy()
  stage_features: Sequence[int] = (64, 128, 256, 512)
  stem: str = 'imagenet'
  shortcut: str = 'projection'
  dtype: Any = jnp.float32
  normalization: str = 'batch'  # One of building.NORMALIZATIONS.

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    if self.shortcut not in SHORTCUTS:
      raise ValueError(f'shortcut must be one of {", ".join(SHORTCUTS)}; got {self.shortcut!r}.')
    building.check_normalization(self.normalization)
    imagenet_stem = self.stem == 'imagenet'
    x = nn.relu(building.conv_norm(self, 'stem_conv', 'stem_bn', x, train, self.stage_features[0],
                                   7 if imagenet_stem else 3, strides=2 if imagenet_stem else 1,
                                   role='first'))
    if imagenet_stem:
      x = building.max_pool_3x3(x)
    for index, (num_blocks, features) in enumerate(zip(self.stage_sizes, self.stage_features)):
      x = Stage(self.block_cls, num_blocks, features, 1 if index == 0 else 2, self.policy,
                self.shortcut, self.dtype, self.normalization,
                name=f'stage{index + 1}')(x, train)
    return building.classifier_head(self, x)
