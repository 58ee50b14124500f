"""The layers a model calls, found by tracing (abstract shapes only)."""
import pytest

from dqnn import models
from dqnn import tracing

_BLOCKS = ['stage1/block0/conv1', 'stage1/block0/conv2', 'stage2/block0/conv1',
           'stage2/block0/conv2']


def _quantized(policy):
  model = models.create_model('_cifar_resnet_tiny', num_classes=10, policy=policy)
  calls, variables = tracing.layer_calls(model, (32, 32, 3))
  assert ['/'.join(module.path) for module, _, _ in calls] == ['stem_conv', *_BLOCKS, 'head']
  return {'/'.join(module.path): in_shape
          for module, in_shape in tracing.quantized_layers(model, (32, 32, 3), variables)}


@pytest.mark.parametrize('policy, expected', [
    (models.QuantPolicy(w_bits=2, a_bits=2), _BLOCKS),  # Stem and head stay float by default.
    (models.QuantPolicy(w_bits=32, a_bits=2), _BLOCKS),  # Quantized inputs alone count.
    (models.QuantPolicy(w_bits=2, a_bits=2, first_layer='8bit'), ['stem_conv', *_BLOCKS]),
    (models.QuantPolicy(w_bits=32, a_bits=32), []),
])
def test_quantized_layers_are_the_calls_with_quantized_weights_or_inputs(policy, expected):
  quantized = _quantized(policy)
  assert list(quantized) == expected
  for name, in_shape in quantized.items():  # One image; the stem reads its 3 channels.
    assert in_shape[0] == 1 and (in_shape[-1] == 3) == (name == 'stem_conv')
