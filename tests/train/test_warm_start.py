"""Initialising a quantized model from a float run (`config.init_from`)."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dqnn import run_builder
from dqnn import runs
from dqnn import train
from dqnn import warm_start
from dqnn.layers import QuantizeActivation
from dqnn.quantizers import dq_weight
from train_testlib import tiny_config


def _initial_state(config, num_classes, images, seed=0):
  model = runs.model_from_config(config, classes=num_classes)
  tx = run_builder.create_optimizer(config, optax.constant_schedule(0.01))
  return model, train.initial_state(model, tx, jax.random.key(seed), images)


def _model_and_variables(config, seed=0):
  images = jax.random.uniform(jax.random.key(1), (4, 32, 32, 3))
  model, state = _initial_state(config, 10, images, seed)
  return model, jax.device_get(state.variables()), images


def _at(tree, names):
  for name in names:
    tree = tree[name]
  return tree


def _float_run(seed=7):
  """A float model's variables, its weights scaled so that they differ from any fresh init."""
  _, variables, _ = _model_and_variables(tiny_config(w_bits=32, a_bits=32), seed)
  return {'params': jax.tree.map(lambda x: 3.0 * x, variables['params']),
          'batch_stats': variables['batch_stats']}


def test_dq_layers_are_fitted_to_float_kernels_and_the_rest_copied():
  float_vars = _float_run()
  model, dq_vars, images = _model_and_variables(tiny_config(w_bits=2, a_bits=2))
  result = warm_start.from_float(model, dq_vars, float_vars, images, jax.random.key(3))
  fitted = 0
  for path, _ in jax.tree_util.tree_leaves_with_path(dq_vars['params']):
    names = [key.key for key in path]
    leaf = _at(result['params'], names)
    if 'weight_quantizer' in names:
      layer = names[:names.index('weight_quantizer')]
      kernel = _at(float_vars['params'], layer)['kernel']
      expected = dq_weight.params_from_kernel(jnp.asarray(kernel), 2)[names[-1]]
      np.testing.assert_allclose(leaf, expected, rtol=1e-6, atol=1e-6)
      fitted += 1
    elif 'act_quantizer' not in names:
      np.testing.assert_array_equal(leaf, _at(float_vars['params'], names))
  assert fitted >= 2  # levels and index of at least one DQ layer.
  jax.tree.map(np.testing.assert_array_equal, result['batch_stats'], float_vars['batch_stats'])


@pytest.mark.parametrize('weights,acts', [('dq', 'dq'), ('lsq', 'lsq'), ('dorefa', 'pact'),
                                          ('lqnets', 'lqnets'), ('latent_levels', 'dq')])
def test_quantizer_variables_are_fitted_to_the_float_model_not_the_fresh_init(weights, acts):
  float_vars = _float_run()
  config = tiny_config(w_bits=2, a_bits=2)
  config.quant.weight_quantizer, config.quant.act_quantizer = weights, acts
  results = []
  for seed in (0, 1):  # Two fresh inits of the quantized model, different random weights.
    model, variables, images = _model_and_variables(config, seed)
    results.append(warm_start.from_float(model, variables, float_vars, images,
                                         jax.random.key(3)))
  # Every variable, quantizer ones included, depends on the float model only.
  jax.tree.map(np.testing.assert_array_equal, results[0], results[1])
  assert jax.tree.structure(results[0]) == jax.tree.structure(variables)
  fresh_acts = [x for p, x in jax.tree_util.tree_leaves_with_path(variables)
                if 'act_quantizer' in jax.tree_util.keystr(p)]
  fitted_acts = [x for p, x in jax.tree_util.tree_leaves_with_path(results[0])
                 if 'act_quantizer' in jax.tree_util.keystr(p)]
  assert fresh_acts and not all(np.array_equal(a, b) for a, b in zip(fresh_acts, fitted_acts))


def test_lsq_weight_steps_start_from_the_float_kernels():
  float_vars = _float_run()
  config = tiny_config(w_bits=2, a_bits=2)
  config.quant.weight_quantizer = 'lsq'
  model, variables, images = _model_and_variables(config)
  result = warm_start.from_float(model, variables, float_vars, images, jax.random.key(3))
  checked = 0
  for path, step in jax.tree_util.tree_leaves_with_path(result['params']):
    names = [key.key for key in path]
    if names[-2:] == ['weight_quantizer', 'step']:
      kernel = _at(float_vars['params'], names[:-2])['kernel']
      # LSQ's initial step 2 mean|w| / sqrt(Qp), Qp = 1 at 2 bits.
      np.testing.assert_allclose(step, 2 * np.mean(np.abs(kernel)), rtol=1e-6)
      checked += 1
  assert checked >= 2


def test_latent_levels_copy_the_float_kernel_and_fit_dq_levels_to_it():
  float_vars = _float_run()
  config = tiny_config(w_bits=2, a_bits=2)
  config.quant.weight_quantizer = 'latent_levels'
  model, variables, images = _model_and_variables(config)
  result = warm_start.from_float(model, variables, float_vars, images, jax.random.key(3))
  checked = 0
  for path, levels in jax.tree_util.tree_leaves_with_path(result['params']):
    names = [key.key for key in path]
    if names[-2:] == ['weight_quantizer', 'levels']:
      quantizer = _at(result['params'], names[:-1])
      kernel = _at(float_vars['params'], names[:-2])['kernel']
      np.testing.assert_array_equal(quantizer['kernel'], kernel)
      np.testing.assert_allclose(levels, dq_weight.params_from_kernel(
          jnp.asarray(kernel), 2)['levels'], rtol=1e-6, atol=1e-6)
      checked += 1
  assert checked >= 2


def test_initial_activation_ranges_do_not_grow_with_depth():
  # Fitted with BatchNorm in eval mode (running statistics = identity at init), the ranges of a
  # ResNet-20 with DoReFa's [-1, 1] weights grew ~1e8-fold from the first block to the last.
  config = tiny_config(w_bits=2, a_bits=2, model='cifar_resnet20')
  config.quant.weight_quantizer, config.quant.act_quantizer = 'dorefa', 'pact'
  images = jax.random.normal(jax.random.key(1), (16, 32, 32, 3))
  _, state = _initial_state(config, 100, images)
  clips = [float(x) for p, x in jax.tree_util.tree_leaves_with_path(state.params)
           if 'clip' in jax.tree_util.keystr(p)]
  assert len(clips) == 18
  assert max(clips) / min(clips) < 10, clips


def test_a_different_float_model_is_a_clear_error():
  _, float_vars, _ = _model_and_variables(tiny_config(w_bits=32, a_bits=32,
                                                      model='_alexnet_tiny'))
  model, dq_vars, images = _model_and_variables(tiny_config(w_bits=2, a_bits=2))
  with pytest.raises(warm_start.WarmStartError, match='does not fit this model'):
    warm_start.from_float(model, dq_vars, float_vars, images, jax.random.key(3))


def test_dq_run_starts_from_a_float_run(cifar_data_dir, tmp_path):
  float_dir, dq_dir = str(tmp_path / 'float'), str(tmp_path / 'dq')
  train.train_and_evaluate(tiny_config(data_dir=cifar_data_dir, w_bits=32, a_bits=32,
                                       num_train_steps=2), float_dir)
  final = train.train_and_evaluate(tiny_config(data_dir=cifar_data_dir, init_from=float_dir),
                                   dq_dir)
  assert final['step'] == 4 and np.isfinite(final['eval/loss'])


def test_quantizer_parameters_need_no_float_counterpart_whatever_their_module_name():
  class Net(nn.Module):
    bits: int

    @nn.compact
    def __call__(self, x):
      x = QuantizeActivation(bits=self.bits, quantizer='pact', name='clip_input')(x)
      return nn.Dense(3)(x)

  x = jnp.ones((2, 4))
  quantized = Net(2).init(jax.random.key(0), x)
  float_variables = Net(32).init(jax.random.key(1), x)
  transferred = warm_start.transfer(quantized, float_variables)
  # The PACT clip (under a module named 'quantizer') is left to `calibrate`; the rest is copied.
  assert not jax.tree.leaves(transferred['params']['clip_input'])
  np.testing.assert_array_equal(transferred['params']['Dense_0']['kernel'],
                                float_variables['params']['Dense_0']['kernel'])
