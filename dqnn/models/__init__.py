"""Model zoo: `create_model(name, ...)` by registry name, each with its input resolution.

Names starting with '_' are tiny test-only variants of each family.
"""
import dataclasses
import functools
from typing import Any, Callable

import flax.linen as nn
import jax.numpy as jnp

from dqnn.models.alexnet import AlexNet
from dqnn.models.cifar_resnet import cifar_resnet, cifar_resnet18
from dqnn.models.mobilenet_v2 import CIFAR_BLOCKS, MobileNetV2
from dqnn.models.policy import QuantPolicy, layer_paths
from dqnn.models.preact_resnet import PreActBasicBlock, PreActBottleneck, PreActResNet
from dqnn.models.resnet import BasicBlock, Bottleneck, ResNet


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """How to build a model (`build(num_classes=, policy=, dtype=)`), its square input size, and
  the tiny variant of its family at that size (what `:runlocal` configs train; '' = none)."""
  build: Callable[..., nn.Module]
  image_size: int
  tiny: str = ''


_p = functools.partial
MODELS = {
    'resnet18': ModelSpec(_p(ResNet, (2, 2, 2, 2), BasicBlock), 224, '_resnet_tiny'),
    'resnet34': ModelSpec(_p(ResNet, (3, 4, 6, 3), BasicBlock), 224, '_resnet_tiny'),
    'resnet50': ModelSpec(_p(ResNet, (3, 4, 6, 3), Bottleneck), 224, '_resnet_tiny'),
    'preact_resnet18': ModelSpec(_p(PreActResNet, (2, 2, 2, 2), PreActBasicBlock), 224,
                                 '_preact_resnet_tiny'),
    'preact_resnet34': ModelSpec(_p(PreActResNet, (3, 4, 6, 3), PreActBasicBlock), 224,
                                 '_preact_resnet_tiny'),
    'preact_resnet50': ModelSpec(_p(PreActResNet, (3, 4, 6, 3), PreActBottleneck), 224,
                                 '_preact_resnet_tiny'),
    'alexnet': ModelSpec(AlexNet, 224),
    'mobilenet_v2': ModelSpec(MobileNetV2, 224),
    'cifar_resnet20': ModelSpec(_p(cifar_resnet, 20), 32, '_cifar_resnet_tiny'),
    'cifar_resnet32': ModelSpec(_p(cifar_resnet, 32), 32, '_cifar_resnet_tiny'),
    'cifar_resnet56': ModelSpec(_p(cifar_resnet, 56), 32, '_cifar_resnet_tiny'),
    'cifar_resnet18': ModelSpec(cifar_resnet18, 32, '_cifar_resnet_tiny'),
    # Without BatchNorm (SkipInit): where no normalization precedes the activation quantizers.
    'cifar_resnet20_no_bn': ModelSpec(_p(cifar_resnet, 20, normalization='none'), 32,
                                      '_cifar_resnet_no_bn_tiny'),
    'cifar_alexnet': ModelSpec(_p(AlexNet, stem='cifar', hidden_features=1024), 32,
                               '_alexnet_tiny'),
    'cifar_mobilenet_v2': ModelSpec(_p(MobileNetV2, blocks=CIFAR_BLOCKS, stem_strides=1), 32,
                                    '_mobilenet_v2_tiny'),
    # Tiny test-only variants: two stages (so shortcuts and strides are exercised) and few
    # distinct layer shapes, as on CPU each new shape costs a compilation.
    '_resnet_tiny': ModelSpec(
        _p(ResNet, (1, 1), BasicBlock, stage_features=(8, 8)), 224),
    '_preact_resnet_tiny': ModelSpec(
        _p(PreActResNet, (1, 2), PreActBasicBlock, stage_features=(8, 8)), 224),
    '_cifar_resnet_tiny': ModelSpec(
        _p(ResNet, (1, 1), BasicBlock, stage_features=(8, 16), stem='cifar', shortcut='zero_pad'),
        32),
    '_cifar_resnet_no_bn_tiny': ModelSpec(
        _p(ResNet, (1, 1), BasicBlock, stage_features=(8, 16), stem='cifar', shortcut='zero_pad',
           normalization='none'), 32),
    '_alexnet_tiny': ModelSpec(
        _p(AlexNet, conv_features=(8, 8, 8, 8, 8), hidden_features=8, stem='cifar'), 32),
    '_mobilenet_v2_tiny': ModelSpec(
        _p(MobileNetV2, blocks=((1, 8, 1, 1), (2, 8, 2, 2)), stem_features=8, stem_strides=1,
           last_features=8), 32),
}
del _p
# The models the experiment configs (configs/) train, per dataset.
CIFAR_MODELS = ('cifar_resnet20', 'cifar_resnet18', 'cifar_alexnet', 'cifar_mobilenet_v2')
IMAGENET_MODELS = ('resnet18', 'resnet34', 'resnet50', 'alexnet', 'mobilenet_v2')


def model_spec(name: str) -> ModelSpec:
  """The registry entry `name`; a ValueError lists the valid names."""
  if name not in MODELS:
    raise ValueError(f'Unknown model {name!r}; choose one of: {", ".join(MODELS)}.')
  return MODELS[name]


def check_input_size(name: str, image_size: int) -> None:
  """Raises a ValueError (listing the models for `image_size`) unless `name` takes it."""
  expected = model_spec(name).image_size
  if image_size != expected:
    fitting = [other for other, spec in MODELS.items() if spec.image_size == image_size]
    raise ValueError(
        f'Model {name!r} takes {expected}x{expected} inputs, not {image_size}x{image_size}; '
        f'models for {image_size}x{image_size}: {", ".join(fitting) or "none"}.')


def create_model(name: str, *, num_classes: int, policy: QuantPolicy,
                 dtype: Any = jnp.float32) -> nn.Module:
  """Model `name`; call it as `model.apply(variables, images, train=...)`.

  Policy overrides are checked against the model's layers (a traced init, only when there are
  overrides): one that matches no layer is a ValueError.
  """
  spec = model_spec(name)
  model = spec.build(num_classes=num_classes, policy=policy, dtype=dtype)
  if policy.overrides:
    policy.check_overrides(layer_paths(model, (1, spec.image_size, spec.image_size, 3)))
  return model
