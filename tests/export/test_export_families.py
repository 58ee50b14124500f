"""Export of every tiny model family and of the baseline quantizers; BN folding; limits."""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from dqnn import export
from dqnn import models
from dqnn import runs
from dqnn.export import format as fmt
from dqnn.export import graph


def _config(model, **quant):
  config = ml_collections.ConfigDict({
      'model': model, 'dataset': 'fake', 'num_classes': 10,
      'image_size': models.model_spec(model).image_size,
      'dtype': 'float32', 'quant': {'w_bits': 2, 'a_bits': 2, **quant}})
  return config


def _random_leaf(path, leaf, rng):
  """A random value valid for a parameter or statistic of this name (no compiled init)."""
  name, shape = path[-1].key, leaf.shape
  if name in ('levels', 'half_levels'):
    # Strictly increasing (and positive for half tables): cumulative positive gaps.
    gaps = rng.uniform(0.02, 0.1, shape)
    return np.cumsum(gaps, axis=-1) - (0 if name == 'half_levels' or len(shape) == 1
                                       else gaps.sum(-1, keepdims=True) / 2)
  if name == 'index':
    return rng.uniform(-0.5, 3.49, shape)
  if name in ('basis', 'step', 'clip', 'var', 'scale'):
    return rng.uniform(0.5, 1.5, shape) * (0.2 if name == 'basis' else 1.0)
  if name == 'kernel':
    return rng.standard_normal(shape) * np.sqrt(2 / np.prod(shape[:-1]))
  return rng.standard_normal(shape) * 0.1  # mean, bias


def _through_a_file(exported):
  """`exported` written and read back: the reader accepts every family's header."""
  return fmt.from_bytes(fmt.to_bytes(exported))


def _init(config, seed=0):
  """The model, random variables of its structure, and images."""
  model = runs.model_from_config(config)
  size = runs.image_size(config)
  images = jax.random.normal(jax.random.key(seed), (2, size, size, 3))
  abstract = jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0), images)
  rng = np.random.default_rng(seed)
  variables = jax.tree_util.tree_map_with_path(
      lambda path, leaf: jnp.asarray(_random_leaf(path, leaf, rng), leaf.dtype), abstract)
  return model, dict(variables), images


@pytest.mark.parametrize('name', ['_cifar_resnet_tiny', '_cifar_resnet_no_bn_tiny', '_resnet_tiny',
                                  '_preact_resnet_tiny',
                                  '_alexnet_tiny', '_mobilenet_v2_tiny'])
def test_every_tiny_family_exports_bitwise(name):
  config = _config(name)
  model, variables, images = _init(config)
  exported = _through_a_file(export.export_model(config, variables))
  np.testing.assert_array_equal(export.infer(exported, images, jit=False),
                                model.apply(variables, images, train=False))


@pytest.mark.parametrize('bits', [3, 8])
def test_other_bit_widths_export_bitwise(bits):
  config = _config('_cifar_resnet_tiny', w_bits=bits, a_bits=bits)
  model, variables, images = _init(config)
  exported = _through_a_file(export.export_model(config, variables))
  np.testing.assert_array_equal(export.infer(exported, images, jit=False),
                                model.apply(variables, images, train=False))


@pytest.mark.parametrize('weight, act', [('lsq', 'lsq'), ('lqnets', 'lqnets'),
                                         ('dorefa', 'pact'), ('dq', 'dorefa'),
                                         ('latent_levels', 'dq')])
def test_baselines_export_as_levels_and_indices(weight, act):
  config = _config('_cifar_resnet_tiny', weight_quantizer=weight, act_quantizer=act)
  model, variables, images = _init(config)
  exported = _through_a_file(export.export_model(config, variables))
  for op in exported.header['ops']:
    if 'indices' in op.get('kernel', {}):
      assert exported.tensors[op['kernel']['levels']].shape[-1] == 4
  # Uniform quantizers round x / step; the runner compares x with midpoints: equal up to ties.
  np.testing.assert_allclose(export.infer(exported, images, jit=False),
                             model.apply(variables, images, train=False), rtol=1e-5, atol=1e-5)


def test_folding_handles_negative_scales_and_reports_what_it_keeps():
  config = _config('_preact_resnet_tiny')
  _, variables, images = _init(config)
  # Negative BN scales on half the channels: their tables flip and indices remap.
  variables['params'] = jax.tree_util.tree_map_with_path(
      lambda path, p: p * jnp.where(jnp.arange(p.shape[-1]) % 2, -1.0, 1.0)
      if path[-1].key == 'scale' else p, variables['params'])
  exported = export.export_model(config, variables)
  folded = _through_a_file(export.fold_batch_norm(exported))
  report = folded.header['folded_batch_norm']
  assert report['stage2/block1/bn_preact'].startswith('kept: its input is not a conv/dense')
  assert report['stage1/bn_last'].startswith('kept')
  assert report['stage2/block1/bn1'] == 'folded into stage2/block1/conv1'
  for op in folded.header['ops']:
    if 'levels' in op.get('kernel', {}):
      assert np.all(np.diff(folded.tensors[op['kernel']['levels']], axis=-1) > 0)
  np.testing.assert_allclose(export.infer(folded, images), export.infer(exported, images),
                             rtol=1e-4, atol=1e-5)


def test_per_tensor_levels_are_not_folded():
  config = _config('_cifar_resnet_tiny', weight_options={'per_channel': False})
  _, variables, images = _init(config)
  exported = export.export_model(config, variables, fold_batch_norm=True)
  assert 'per-tensor levels' in exported.header['folded_batch_norm']['stage1/block0/bn1']
  assert exported.header['folded_batch_norm']['stem_bn'] == 'folded into stem_conv'
  np.testing.assert_allclose(export.infer(exported, images),
                             export.infer(export.export_model(config, variables), images),
                             rtol=1e-4, atol=1e-5)


def test_three_bit_kernels_pack_densely():
  config = _config('_cifar_resnet_tiny', w_bits=3)
  _, variables, _ = _init(config)
  exported = export.export_model(config, variables)
  op = next(op for op in exported.header['ops'] if op.get('name') == 'stage2/block0/conv1')
  count = 3 * 3 * 8 * 16
  assert exported.tensors[op['kernel']['indices']].nbytes == -(-3 * count // 8) == 432


class _TanhNet(nn.Module):

  @nn.compact
  def __call__(self, x, train=False):
    return jnp.tanh(nn.Dense(4)(x.reshape(x.shape[0], -1)))


def test_unsupported_operation_is_a_clear_error():
  model = _TanhNet()
  variables = model.init(jax.random.key(0), jnp.zeros((2, 4, 4, 3)))
  with pytest.raises(graph.UnsupportedModelError, match="primitive 'tanh'"):
    graph.trace(model, variables, (2, 4, 4, 3))
