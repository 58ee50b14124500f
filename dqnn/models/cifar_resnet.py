"""ResNets for 32x32 inputs: He et al.'s ResNet-20/32/56, and ResNet-18 without the ImageNet stem.

ResNet-(6n+2) uses option-A shortcuts (strided subsampling + zero-padded channels), as He et al.
(2016) did on CIFAR: the shortcut has no parameters, so there is nothing to quantize on it and
the count is theirs: 269,722 parameters for 10 classes (their "0.27M"), 275,572 for 100 (the
head grows by 64 x 90 + 90). ResNet-18 keeps projection (option-B) shortcuts, as on ImageNet.
"""
from dqnn.models.resnet import BasicBlock, ResNet


def cifar_resnet(depth: int, **kwargs) -> ResNet:
  """ResNet-`depth` (depth = 6n + 2): a 3x3 conv, 3 stages of n basic blocks (16/32/64), dense."""
  if depth < 8 or (depth - 2) % 6:
    raise ValueError(f'A CIFAR ResNet has depth 6n + 2 (20, 32, 56, ...); got {depth}.')
  blocks = (depth - 2) // 6
  return ResNet(stage_sizes=(blocks,) * 3, block_cls=BasicBlock, stage_features=(16, 32, 64),
                stem='cifar', shortcut='zero_pad', **kwargs)


def cifar_resnet18(**kwargs) -> ResNet:
  """ResNet-18 with a 3x3 stride-1 stem and no max pool (the common 32x32 adaptation)."""
  return ResNet(stage_sizes=(2, 2, 2, 2), block_cls=BasicBlock, stem='cifar', **kwargs)
