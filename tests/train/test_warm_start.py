"""Initialising a DQ model from a float run (`config.init_from`)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dqnn import train
from dqnn import warm_start
from dqnn.quantizers import dq_weight
from train_testlib import tiny_config


def _variables(config):
  model = train.create_model(config, num_classes=10)
  return jax.device_get(model.init(jax.random.key(0), jnp.ones((2, 32, 32, 3)), train=False))


def test_dq_layers_are_fitted_to_float_kernels_and_the_rest_copied():
  float_vars = _variables(tiny_config(w_bits=32, a_bits=32))
  dq_vars = _variables(tiny_config(w_bits=2, a_bits=2))
  result = warm_start.from_float(dq_vars, float_vars)
  fitted = 0
  for path, _ in jax.tree_util.tree_leaves_with_path(dq_vars['params']):
    names = [key.key for key in path]
    leaf = result['params']
    for name in names:
      leaf = leaf[name]
    if 'weight_quantizer' in names:
      layer = names[:names.index('weight_quantizer')]
      kernel = float_vars['params']
      for name in layer:
        kernel = kernel[name]
      expected = dq_weight.params_from_kernel(jnp.asarray(kernel['kernel']), 2)[names[-1]]
      np.testing.assert_allclose(leaf, expected, rtol=1e-6, atol=1e-6)
      fitted += 1
    elif 'act_quantizer' not in names:
      expected = float_vars['params']
      for name in names:
        expected = expected[name]
      np.testing.assert_array_equal(leaf, expected)
  assert fitted >= 2  # levels and index of at least one DQ layer.
  jax.tree.map(np.testing.assert_array_equal, result['batch_stats'], float_vars['batch_stats'])


def test_a_different_float_model_is_a_clear_error():
  float_vars = _variables(tiny_config(w_bits=32, a_bits=32, model='_alexnet_tiny'))
  dq_vars = _variables(tiny_config(w_bits=2, a_bits=2))
  with pytest.raises(warm_start.WarmStartError, match='does not fit this model'):
    warm_start.from_float(dq_vars, float_vars)


def test_dq_run_starts_from_a_float_run(cifar_data_dir, tmp_path):
  float_dir, dq_dir = str(tmp_path / 'float'), str(tmp_path / 'dq')
  train.train_and_evaluate(tiny_config(data_dir=cifar_data_dir, w_bits=32, a_bits=32,
                                       num_train_steps=2), float_dir)
  final = train.train_and_evaluate(tiny_config(data_dir=cifar_data_dir, init_from=float_dir),
                                   dq_dir)
  assert final['step'] == 4 and np.isfinite(final['eval/loss'])
