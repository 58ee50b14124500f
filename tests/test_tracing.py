"""The layers a model calls, found by tracing (abstract shapes only)."""
from dqnn import models
from dqnn import tracing
from dqnn.quantizers import FULL_PRECISION


def test_quantized_layers_are_the_calls_with_quantized_weights_or_inputs():
  model = models.create_model('_cifar_resnet_tiny', num_classes=10,
                              policy=models.QuantPolicy(w_bits=2, a_bits=2))
  calls, variables = tracing.layer_calls(model, (32, 32, 3))
  quantized = tracing.quantized_layers(model, (32, 32, 3), variables)
  assert [module.path for module, _ in quantized] == [
      module.path for module, _, _ in calls
      if (module.w_bits, module.a_bits) != (FULL_PRECISION, FULL_PRECISION)]
  # The stem and the classifier stay at full precision under the default policy.
  assert 0 < len(quantized) < len(calls)
  assert all(in_shape[0] == 1 for _, in_shape in quantized)
