"""Where the quantizers sit: which layers, which bits, and what their inputs are."""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dqnn.layers import QuantConv, QuantDense
from dqnn.models import MODELS, QuantPolicy, building, create_model, layer_paths

TINY = [name for name in MODELS if name.startswith('_')]
QUANT_FIELDS = ('w_bits', 'a_bits', 'weight_quantizer', 'act_quantizer', 'weight_options',
                'act_options', 'a_signed')


def abstract_variables(name, policy):
  model = create_model(name, num_classes=10, policy=policy)
  size = MODELS[name].image_size
  return jax.eval_shape(functools.partial(model.init, train=False), jax.random.PRNGKey(0),
                        jax.ShapeDtypeStruct((2, size, size, 3), jnp.float32))


def abstract_params(name, policy):
  return abstract_variables(name, policy)['params']


def act_basis(variables, path):
  """A DQ activation quantizer's basis (closed-form levels live in `quant_stats`)."""
  return at(variables['quant_stats'], path)['act_quantizer']['basis']


def at(params, path):
  for key in path.split('/'):
    params = params[key]
  return params


def float_layer(cls):
  """Builds the plain flax layer in place of a full-precision QuantConv/QuantDense."""
  def build(*args, **kwargs):
    quant = {field: kwargs.pop(field) for field in QUANT_FIELDS if field in kwargs}
    assert quant['w_bits'] == quant['a_bits'] == 32
    return cls(*args, **kwargs)
  return build


@pytest.mark.parametrize('name', TINY)
def test_full_precision_is_exactly_the_float_model_and_inputs_are_activations(name, monkeypatch):
  model = create_model(name, num_classes=10, policy=QuantPolicy())
  size = MODELS[name].image_size
  images = jax.random.uniform(jax.random.PRNGKey(1), (2, size, size, 3))
  variables = model.init(jax.random.PRNGKey(0), images, train=False)
  inputs = {}

  def record_inputs(next_fun, args, kwargs, context):
    if isinstance(context.module, (QuantConv, QuantDense)) and context.method_name == '__call__':
      inputs['/'.join(context.module.path)] = (context.module.a_signed, args[0])
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(record_inputs):
    outputs = model.apply(variables, images, train=True, mutable=['batch_stats'])
  _, *body, last = layer_paths(model, images.shape)
  for path in body + [last]:
    signed, x = inputs[path]
    # Unsigned activation grids are for BN+ReLU(6) outputs; signed ones for inputs that are not.
    assert bool(jnp.any(x < 0)) == signed, path

  monkeypatch.setattr(building, 'QuantConv', float_layer(nn.Conv))
  monkeypatch.setattr(building, 'QuantDense', float_layer(nn.Dense))
  float_model = create_model(name, num_classes=10, policy=QuantPolicy())
  float_variables = jax.eval_shape(functools.partial(float_model.init, train=False),
                                   jax.random.PRNGKey(0), images)
  assert jax.tree.map(jnp.shape, float_variables) == jax.tree.map(jnp.shape, variables)
  float_outputs = float_model.apply(variables, images, train=True, mutable=['batch_stats'])
  jax.tree.map(np.testing.assert_array_equal, outputs, float_outputs)


def test_every_body_layer_is_quantized_with_the_global_bits():
  variables = abstract_variables('_preact_resnet_tiny', QuantPolicy(w_bits=2, a_bits=2))
  model = create_model('_preact_resnet_tiny', num_classes=10, policy=QuantPolicy())
  _, *body, _ = layer_paths(model, (1, 224, 224, 3))
  assert 'stage2/block0/shortcut' in body
  for path in body:
    layer = at(variables['params'], path)
    assert set(layer) == {'weight_quantizer'}, path
    assert layer['weight_quantizer']['levels'].shape[-1] == 4, path
    assert act_basis(variables, path).shape == (2,), path


def test_an_override_reaches_its_layer_and_only_it():
  policy = QuantPolicy(w_bits=2, a_bits=2,
                       overrides=(('stage2/block0/conv1', dict(w_bits=4, a_bits=3)),))
  variables = abstract_variables('_resnet_tiny', policy)
  params = variables['params']
  overridden = at(params, 'stage2/block0/conv1')
  assert overridden['weight_quantizer']['levels'].shape == (8, 16)  # (output channels, 2**4)
  assert overridden['weight_quantizer']['index'].shape == (3, 3, 8, 8)
  assert act_basis(variables, 'stage2/block0/conv1').shape == (3,)
  for path in ('stage1/block0/conv1', 'stage2/block0/conv2', 'stage2/block0/shortcut'):
    assert at(params, path)['weight_quantizer']['levels'].shape[-1] == 4, path
    assert act_basis(variables, path).shape == (2,), path


def test_float_first_and_last_layers_are_plain():
  params = abstract_params('_resnet_tiny', QuantPolicy(w_bits=2, a_bits=2))
  assert set(params['stem_conv']) == {'kernel'}
  assert set(params['head']) == {'kernel', 'bias'}


def test_8bit_first_and_last_layers():
  variables = abstract_variables('_alexnet_tiny', QuantPolicy(
      w_bits=2, a_bits=2, first_layer='8bit', last_layer='8bit'))
  params = variables['params']
  # The image is not quantized: only conv1's kernel is.
  assert set(params['conv1']) == {'weight_quantizer'} and 'conv1' not in variables['quant_stats']
  assert params['conv1']['weight_quantizer']['levels'].shape == (8, 256)
  assert params['head']['weight_quantizer']['levels'].shape == (10, 256)
  assert act_basis(variables, 'head').shape == (8,)


def test_mobilenet_depthwise_convs_have_levels_per_channel():
  params = abstract_params('_mobilenet_v2_tiny', QuantPolicy(w_bits=2, a_bits=2))
  depthwise = params['block1']['depthwise']['weight_quantizer']
  assert depthwise['index'].shape == (3, 3, 1, 16) and depthwise['levels'].shape == (16, 4)
