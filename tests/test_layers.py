import warnings

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dqnn.layers import QuantConv, QuantDense, QuantizeActivation, QuantStateError

X = jax.random.normal(jax.random.PRNGKey(1), (2, 8, 8, 3))


@pytest.mark.parametrize('kwargs', [dict(), dict(strides=2, padding='VALID', use_bias=False),
                                    dict(feature_group_count=3, kernel_dilation=2)])
def test_32_bits_is_exactly_the_float_conv(kwargs):
  float_conv, quant_conv = nn.Conv(6, (3, 3), **kwargs), QuantConv(6, (3, 3), **kwargs)
  variables = float_conv.init(jax.random.PRNGKey(0), X)
  assert jax.tree.map(jnp.shape, quant_conv.init(jax.random.PRNGKey(0), X)) == jax.tree.map(
      jnp.shape, variables)
  np.testing.assert_array_equal(quant_conv.apply(variables, X), float_conv.apply(variables, X))


def test_32_bits_is_exactly_the_float_dense():
  x = X.reshape(2, -1)
  variables = nn.Dense(5).init(jax.random.PRNGKey(0), x)
  np.testing.assert_array_equal(QuantDense(5).apply(variables, x), nn.Dense(5).apply(variables, x))
  np.testing.assert_array_equal(QuantizeActivation(bits=32).apply({}, x), x)


def test_quantized_conv_computes_with_quantized_kernel_and_input():
  conv = QuantConv(4, (3, 3), w_bits=2, a_bits=2, use_bias=False)
  x = jax.nn.relu(X)
  variables = conv.init(jax.random.PRNGKey(0), x)
  from dqnn.quantizers import dq_weight
  kernel = dq_weight.quantized_weight(variables['params']['weight_quantizer'])
  x_q = QuantizeActivation(bits=2).apply(
      {'quant_stats': {'quantizer': variables['quant_stats']['act_quantizer']}}, x)
  assert len(np.unique(x_q)) <= 4
  expected = nn.Conv(4, (3, 3), use_bias=False).apply({'params': {'kernel': kernel}}, x_q)
  np.testing.assert_allclose(conv.apply(variables, x), expected, rtol=1e-6, atol=1e-6)


def test_bfloat16_compute_keeps_float32_quantizer_parameters():
  conv = QuantConv(4, (3, 3), w_bits=2, a_bits=2, dtype=jnp.bfloat16)
  variables = conv.init(jax.random.PRNGKey(0), jax.nn.relu(X))
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(variables))
  assert conv.apply(variables, jax.nn.relu(X)).dtype == jnp.bfloat16


@pytest.mark.parametrize('field', ['w_bits', 'a_bits'])
@pytest.mark.parametrize('bits', [0, 9])
def test_bits_out_of_range_fail_clearly(field, bits):
  with pytest.raises(ValueError, match=f'{field} must be one of 1, 2, 3, 4, 8 or 32'):
    QuantConv(4, (3, 3), **{field: bits}).init(jax.random.PRNGKey(0), X)


def test_activation_error_is_reported_only_when_asked():
  conv = QuantConv(4, (3, 3), w_bits=2, a_bits=2)
  x = jax.nn.relu(X)
  variables = conv.init(jax.random.PRNGKey(0), x)
  assert set(variables) == {'params', 'quant_stats'}
  _, metrics = conv.apply(variables, x, mutable=['quant_metrics'])
  (error,) = metrics['quant_metrics']['act_relative_error']
  assert 0.0 < float(error) < 1.0


class _BNNet(nn.Module):
  use_running_average: bool | None = None

  @nn.compact
  def __call__(self, x):
    x = QuantConv(4, (3, 3), w_bits=2, a_bits=2, use_running_average=self.use_running_average)(x)
    return nn.BatchNorm(use_running_average=False)(x)


def test_missing_quant_stats_names_what_to_add():
  x = jax.nn.relu(X)
  variables = _BNNet().init(jax.random.PRNGKey(0), x)
  without = {'params': variables['params'], 'batch_stats': variables['batch_stats']}
  with pytest.raises(QuantStateError, match=r"'quant_stats' collection.*TrainState.*"
                     r"mutable=\['batch_stats', 'quant_stats'\]"):
    _BNNet().apply(without, x, mutable=['batch_stats'])


def test_training_with_immutable_quant_stats_is_an_error_not_a_freeze():
  x = jax.nn.relu(X)
  variables = _BNNet().init(jax.random.PRNGKey(0), x)
  # Training BatchNorm (mutable batch_stats) but not the quantizers: the silent freeze.
  with pytest.raises(QuantStateError,
                     match="QuantConv_0 is training.*'quant_stats' is not mutable"):
    _BNNet().apply(variables, x, mutable=['batch_stats'])
  with pytest.raises(QuantStateError, match='is training'):
    _BNNet(use_running_average=False).apply(variables, x)
  # Evaluation, explicit or with nothing mutable, keeps the stored statistics.
  conv = QuantConv(4, (3, 3), w_bits=2, a_bits=2)
  conv.apply({name: variables[name]['QuantConv_0'] for name in ('params', 'quant_stats')}, x)
  _, state = _BNNet(use_running_average=True).apply(variables, x,
                                                     mutable=['batch_stats', 'quant_stats'])
  assert jax.tree.all(jax.tree.map(
      lambda a, b: bool(jnp.array_equal(a, b)), state['quant_stats'], variables['quant_stats']))
  _, state = _BNNet().apply(variables, x, mutable=['batch_stats', 'quant_stats'])
  assert not jax.tree.all(jax.tree.map(
      lambda a, b: bool(jnp.array_equal(a, b)), state['quant_stats'], variables['quant_stats']))


def test_gradient_of_a_layer_evaluating_by_default_is_an_error_not_a_freeze():
  # No BatchNorm and nothing mutable: the layer evaluates, so training it would freeze its
  # statistics (what nnx.bridge.ToNNX without mutable does).
  dense = QuantDense(3, w_bits=2, a_bits=2, name='head')
  x = jax.nn.relu(X.reshape(2, -1))
  variables = dense.init(jax.random.PRNGKey(0), x)
  loss = lambda params, x: jnp.sum(dense.apply({**variables, 'params': params}, x))
  for grad in (jax.grad(loss), jax.jit(jax.grad(loss))):
    with pytest.raises(QuantStateError, match=r"head is being differentiated.*mutable=\["
                       r"'batch_stats', 'quant_stats'\].*use_running_average=True"):
      grad(variables['params'], x)
  jax.grad(loss, argnums=1)(variables['params'], x)  # input gradients of an evaluating layer
  frozen = dense.clone(use_running_average=True)  # frozen statistics, on purpose
  jax.grad(lambda p: jnp.sum(frozen.apply({**variables, 'params': p}, x)))(variables['params'])


def test_lqnets_weights_follow_the_train_flag():
  conv = QuantConv(4, (3, 3), w_bits=2, weight_quantizer='lqnets', use_running_average=True)
  variables = conv.init(jax.random.PRNGKey(0), X)
  _, state = conv.apply(variables, X, mutable=['quant_stats'])
  np.testing.assert_array_equal(state['quant_stats']['weight_quantizer']['basis'],
                                variables['quant_stats']['weight_quantizer']['basis'])
  with pytest.raises(QuantStateError, match='is training'):
    conv.clone(use_running_average=False).apply(variables, X)


def test_unsigned_quantizer_warns_once_about_negative_inputs_under_jit():
  conv = QuantConv(4, (3, 3), w_bits=2, a_bits=2, name='stem')
  variables = conv.init(jax.random.PRNGKey(0), jax.nn.relu(X))

  @jax.jit
  def grads(params, x):
    loss = lambda p: jnp.sum(conv.apply({**variables, 'params': p}, x,
                                        mutable=['quant_stats'])[0])
    return jax.grad(loss)(params)

  with pytest.warns(UserWarning, match=r'stem: \d+% of the inputs .* a_signed=True'):
    jax.block_until_ready(grads(variables['params'], X))
    jax.effects_barrier()
  with warnings.catch_warnings():
    warnings.simplefilter('error')
    jax.block_until_ready(grads(variables['params'], jax.nn.relu(X)))  # non-negative: quiet
    signed = conv.clone(a_signed=True)
    signed.apply(signed.init(jax.random.PRNGKey(0), X), X, mutable=['quant_stats'])
    conv.apply(variables, X)  # evaluation: not checked
    jax.effects_barrier()


def test_training_layer_warns_once_when_a_foreign_optimizer_moved_its_dq_weights():
  conv = QuantConv(4, (3, 3), w_bits=2, name='block')
  variables = conv.init(jax.random.PRNGKey(0), X)
  tx = optax.sgd(1.0)  # no direct update: the index leaves [-1/2, L-1/2] at once
  grads = jax.tree.map(lambda p: 3.0 * jnp.ones_like(p), variables['params'])
  updates, _ = tx.update(grads, tx.init(variables['params']))
  moved = {**variables, 'params': optax.apply_updates(variables['params'], updates)}
  step = jax.jit(lambda v: conv.apply(v, X, mutable=['quant_stats'])[0])
  with warnings.catch_warnings():  # parameters in their domain: quiet
    warnings.simplefilter('error')
    jax.block_until_ready(step(variables))
    jax.effects_barrier()
  with pytest.warns(UserWarning, match="block: its weight quantizer's parameters left their domain.*"
                    'wrap_optimizer.*project_dq_params'):
    jax.block_until_ready(step(moved))
    jax.effects_barrier()
