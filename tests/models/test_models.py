import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dqnn.models import CIFAR_MODELS, MODELS, QuantPolicy, check_input_size, create_model

FLOAT = QuantPolicy()
W2A2 = QuantPolicy(w_bits=2, a_bits=2)
# LSQ weights: the DQ k-means initialisation compiles once per kernel shape (seconds each), so
# the real-run tests use it only where the DQ parameters themselves are under test.
W2A2_FAST_INIT = QuantPolicy(w_bits=2, a_bits=2, weight_quantizer='lsq')
TINY = [name for name in MODELS if name.startswith('_')]


def abstract_variables(name, policy=FLOAT, num_classes=1000, dtype=jnp.float32):
  model = create_model(name, num_classes=num_classes, policy=policy, dtype=dtype)
  size = MODELS[name].image_size
  images = jax.ShapeDtypeStruct((2, size, size, 3), jnp.float32)
  variables = jax.eval_shape(functools.partial(model.init, train=False), jax.random.PRNGKey(0),
                             images)
  logits = jax.eval_shape(functools.partial(model.apply, train=False), variables, images)
  return variables, logits


def num_params(variables):
  return sum(leaf.size for leaf in jax.tree.leaves(variables['params']))


@pytest.mark.parametrize('name, num_classes, expected', [
    # torchvision.
    ('resnet18', 1000, 11_689_512),
    ('resnet34', 1000, 21_797_672),
    ('resnet50', 1000, 25_557_032),
    ('mobilenet_v2', 1000, 3_504_872),
    # Pre-activation (tensorpack/LQ-Nets): the v1 count minus the projection shortcuts' BN
    # (2 x (128 + 256 + 512)) and one BN per block, plus one pre-activation BN per non-first
    # block and one closing BN per stage; net -1,792 (18/34) and -7,680 (50, 4x wide BNs).
    ('preact_resnet18', 1000, 11_687_720),
    ('preact_resnet34', 1000, 21_795_880),
    ('preact_resnet50', 1000, 25_549_352),
    # Convs 3,745,824 (bias-free; conv1 11x11x3x96, conv2 5x5x96x256, 3x3 384/384/256) + conv BN
    # 2,752 + fc6 9216x4096 + fc7 4096x4096 (bias-free) + their BN 16,384 + head 4096x1000+1000.
    ('alexnet', 1000, 62_387_912),
    # He et al. 2016: 269,722 for 10 classes ("0.27M", option-A shortcuts have no parameters),
    # and the 100-class head adds 64 x 90 + 90 = 5,850.
    ('cifar_resnet20', 10, 269_722),
    ('cifar_resnet20', 100, 275_572),
    # Two (four) more blocks per stage than ResNet-20: 464,154 (853,018) for 10 classes.
    ('cifar_resnet32', 100, 470_004),
    ('cifar_resnet56', 100, 858_868),
    # ResNet-18 with a 3x3x3x64 stem instead of 7x7x3x64 and 100 classes:
    # 11,689,512 - 9,408 + 1,728 - 513 x 900.
    ('cifar_resnet18', 100, 11_220_132),
    # ResNet-20 without BatchNorm: its 688 BN channels' scale and offset (1,376) become one conv
    # bias each (688), plus one residual gain per block (9).
    ('cifar_resnet20_no_bn', 100, 274_893),
])
def test_full_precision_parameter_counts(name, num_classes, expected):
  assert num_params(abstract_variables(name, num_classes=num_classes)[0]) == expected


@pytest.mark.parametrize('name', [name for name in MODELS if name not in TINY])
def test_output_shape_at_the_model_resolution(name):
  _, logits = abstract_variables(name, policy=W2A2, num_classes=17, dtype=jnp.bfloat16)
  assert logits.shape == (2, 17) and logits.dtype == jnp.float32


def test_bfloat16_compute_keeps_float32_parameters():
  variables, _ = abstract_variables('_mobilenet_v2_tiny', policy=W2A2, dtype=jnp.bfloat16)
  assert {leaf.dtype for leaf in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}


@pytest.mark.parametrize('name', TINY)
def test_tiny_models_train_and_evaluate(name):
  # Full precision runs in test_placement (exactly the float model).
  model = create_model(name, num_classes=10, policy=W2A2_FAST_INIT)
  size = MODELS[name].image_size
  images = jax.random.uniform(jax.random.PRNGKey(1), (2, size, size, 3))
  variables = model.init(jax.random.PRNGKey(0), images, train=False)
  logits, state = model.apply(variables, images, train=True,
                              mutable=['batch_stats', 'quant_stats'])
  assert logits.shape == (2, 10) and bool(jnp.all(jnp.isfinite(logits)))
  if 'no_bn' in name:
    assert 'batch_stats' not in variables and 'batch_stats' not in state
  else:
    moved = jax.tree.map(lambda new, old: bool(jnp.any(new != old)), state['batch_stats'],
                         variables['batch_stats'])
    assert all(jax.tree.leaves(moved)), 'train mode must update every BatchNorm'
  evaluated = model.apply({**variables, **state}, images, train=False)
  assert evaluated.shape == (2, 10) and bool(jnp.all(jnp.isfinite(evaluated)))
  np.testing.assert_array_equal(evaluated, model.apply({**variables, **state}, images))


def test_unknown_model_lists_the_choices():
  with pytest.raises(ValueError, match=r"Unknown model 'resnet19'; choose one of: resnet18, "
                                       r'resnet34, .*cifar_resnet20'):
    create_model('resnet19', num_classes=10, policy=FLOAT)
  with pytest.raises(ValueError, match='Unknown model'):
    check_input_size('resnet19', 224)


def test_unsupported_input_size_lists_the_models_for_it():
  check_input_size('resnet18', 224)
  with pytest.raises(ValueError, match=r"'resnet18' takes 224x224 inputs, not 32x32; models for "
                                       r'32x32: cifar_resnet20, .*cifar_mobilenet_v2'):
    check_input_size('resnet18', 32)
  with pytest.raises(ValueError, match='models for 64x64: none'):
    check_input_size('cifar_resnet20', 64)


@pytest.mark.parametrize('name', [name for name, spec in MODELS.items() if spec.tiny])
def test_tiny_variant_is_a_test_model_at_the_same_input_size(name):
  tiny = MODELS[name].tiny
  assert tiny in TINY
  assert MODELS[tiny].image_size == MODELS[name].image_size


def test_every_cifar_model_of_the_configs_has_a_tiny_variant():
  # `:runlocal` CIFAR configs then train a tiny model (configs/base.py).
  assert all(MODELS[name].tiny for name in CIFAR_MODELS)


def test_resnet_without_batch_norm_has_conv_biases_and_starts_as_identity_blocks():
  model = create_model('_cifar_resnet_no_bn_tiny', num_classes=10, policy=FLOAT)
  images = jax.random.uniform(jax.random.PRNGKey(1), (2, 32, 32, 3))
  variables = model.init(jax.random.PRNGKey(0), images)
  params = variables['params']
  assert set(variables) == {'params'}
  for block in (params['stage1']['block0'], params['stage2']['block0']):
    assert {'conv1', 'conv2', 'skip_gain'} <= set(block) and float(block['skip_gain']) == 0.0
    assert all('bias' in block[conv] for conv in ('conv1', 'conv2'))
  # With every gain at 0 a block returns ReLU(shortcut(x)): the stem's output, subsampled and
  # zero-padded to 16 channels by the second stage.
  _, captured = model.apply(variables, images, capture_intermediates=True)
  stem = jax.nn.relu(params['stem_conv']['bias'] + jax.lax.conv_general_dilated(
      images, params['stem_conv']['kernel'], (1, 1), ((1, 1), (1, 1)),
      dimension_numbers=('NHWC', 'HWIO', 'NHWC')))
  expected = jnp.pad(stem[:, ::2, ::2, :], ((0, 0), (0, 0), (0, 0), (4, 4)))
  np.testing.assert_allclose(captured['intermediates']['stage2']['__call__'][0], expected,
                             rtol=1e-6, atol=1e-6)
  # Once a gain moves, the residual branch contributes.
  moved = jax.tree.map(lambda x: x, variables)  # A copy to edit.
  moved['params']['stage2']['block0']['skip_gain'] = jnp.float32(1.0)
  _, changed = model.apply(moved, images, capture_intermediates=True)
  assert not np.allclose(changed['intermediates']['stage2']['__call__'][0], expected)
  # The float32 gain does not promote bfloat16 activations.
  bfloat16 = create_model('_cifar_resnet_no_bn_tiny', num_classes=10, policy=FLOAT,
                          dtype=jnp.bfloat16)
  _, captured = bfloat16.apply(moved, images, capture_intermediates=True)
  assert captured['intermediates']['stage2']['__call__'][0].dtype == jnp.bfloat16


def test_unknown_normalization_is_one_clear_error():
  model = MODELS['_cifar_resnet_no_bn_tiny'].build(num_classes=10, policy=FLOAT)
  with pytest.raises(ValueError, match="normalization must be one of batch, none; got 'layer'"):
    model.clone(normalization='layer').init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))
