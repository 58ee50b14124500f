import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from dqnn import optim
from dqnn.layers import QuantConv, QuantizeActivation
from dqnn.quantizers.pact import PACTActivation


class _Net(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.BatchNorm(use_running_average=False)(nn.Conv(4, (3, 3))(x)))
    # Gradient-trained DQ activation levels: a parameter of the quantizer group.
    x = QuantConv(4, (3, 3), w_bits=2, a_bits=2, act_options={'update': 'gradient'})(x)
    x = QuantConv(4, (3, 3), w_bits=2, a_bits=2, weight_quantizer='lsq', act_quantizer='pact')(x)
    return nn.Dense(3)(x.mean((1, 2)))


def test_parameter_groups_label_every_kind_of_parameter():
  params = _Net().init(jax.random.PRNGKey(0), jnp.ones((2, 6, 6, 3)))['params']
  groups = optim.parameter_groups(params)
  assert groups['Conv_0'] == {'kernel': 'weights', 'bias': 'other'}
  assert groups['BatchNorm_0'] == {'scale': 'other', 'bias': 'other'}
  assert groups['QuantConv_0'] == {'weight_quantizer': {'levels': 'levels', 'index': 'weights'},
                                   'act_quantizer': {'basis': 'quantizer'}, 'bias': 'other'}
  assert groups['QuantConv_1'] == {'weight_quantizer': {'kernel': 'weights', 'step': 'quantizer'},
                                   'act_quantizer': {'clip': 'quantizer'}, 'bias': 'other'}


def test_groups_get_their_own_learning_rates():
  params = _Net().init(jax.random.PRNGKey(0), jnp.ones((2, 6, 6, 3)))['params']
  grads = jax.tree.map(jnp.ones_like, params)
  tx = optim.create_optimizer(1.0, momentum=0.0, level_lr_scale=0.0, quantizer_optimizer='sgd',
                              quantizer_lr_scale=0.5, level_gradient='sum')
  updates, _ = tx.update(grads, tx.init(params), params)
  assert float(jnp.max(jnp.abs(updates['QuantConv_0']['weight_quantizer']['levels']))) == 0.0
  assert float(updates['QuantConv_1']['act_quantizer']['clip']) == -0.5
  assert float(updates['BatchNorm_0']['scale'][0]) == -1.0


def test_bad_optimizer_options_fail_clearly():
  with pytest.raises(ValueError, match='level_gradient must be one of'):
    optim.create_optimizer(0.1, level_gradient='median')
  with pytest.raises(ValueError, match='quantizer_optimizer must be one of'):
    optim.create_optimizer(0.1, quantizer_optimizer='lamb')


class _Standalone(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = QuantizeActivation(bits=2, quantizer='pact')(x)
    x = PACTActivation(bits=2, name='my_clip')(x)
    x = QuantizeActivation(bits=2, quantizer='lsq', name='anything')(x)
    return QuantConv(4, (3, 3), w_bits=2, weight_options={'symmetric': True})(x)


def test_quantizers_are_grouped_by_what_they_are_not_by_their_name():
  params = _Standalone().init(jax.random.PRNGKey(0), jnp.ones((2, 6, 6, 3)))['params']
  groups = optim.parameter_groups(params)
  assert groups['QuantizeActivation_0'] == {'quantizer': {'clip': 'quantizer'}}
  assert groups['my_clip'] == {'clip': 'quantizer'}
  assert groups['anything'] == {'quantizer': {'step': 'quantizer'}}
  assert groups['QuantConv_0'] == {
      'weight_quantizer': {'half_levels': 'levels', 'index': 'weights'}, 'bias': 'other'}


def test_decay_mask_selects_float_kernels_only():
  params = _Net().init(jax.random.PRNGKey(0), jnp.ones((2, 6, 6, 3)))['params']
  mask = optim.decay_mask(params)
  assert mask['Conv_0'] == {'kernel': True, 'bias': False}
  assert mask['QuantConv_0'] == {'weight_quantizer': {'levels': False, 'index': False},
                                 'act_quantizer': {'basis': False}, 'bias': False}
  assert mask['QuantConv_1']['weight_quantizer'] == {'kernel': True, 'step': False}
  assert mask['Dense_0'] == {'kernel': True, 'bias': False}
  assert mask['BatchNorm_0'] == {'scale': False, 'bias': False}
