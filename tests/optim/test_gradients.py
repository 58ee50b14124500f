import warnings

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dqnn import optim
from dqnn import quantizers
from dqnn.layers import QuantConv
from dqnn.optim import gradients
from dqnn.quantizers import dq_weight, dq_weight_update


def _params():
  return {
      'conv': {'weight_quantizer': {'levels': jnp.array([[-1.0, 0.0, 1.0, 2.0]]),
                                    'index': jnp.array([[0.2], [1.6], [2.4], [3.1]])},
               'bias': jnp.array([0.5])},
      'dense': {'kernel': jnp.array([[2.0]]), 'bias': jnp.array([1.0])},
  }


def test_weight_decay_acts_on_quantized_weights_and_float_kernels_only():
  params = _params()
  grads = {'conv': {'weight_quantizer': {'levels': jnp.zeros((1, 4)), 'index': jnp.zeros((4, 1))},
                    'bias': jnp.zeros(1)},
           'dense': {'kernel': jnp.zeros((1, 1)), 'bias': jnp.zeros(1)}}
  decayed, _ = optim.weight_decay(0.1).update(grads, None, params)
  # w_q = -1, 1, 1, 2: decay in weight units, not index units.
  np.testing.assert_allclose(decayed['conv']['weight_quantizer']['index'], [[-0.1], [0.1], [0.1], [0.2]])
  np.testing.assert_array_equal(decayed['conv']['weight_quantizer']['levels'], jnp.zeros((1, 4)))
  np.testing.assert_allclose(decayed['dense']['kernel'], [[0.2]])
  np.testing.assert_array_equal(decayed['conv']['bias'], [0.0])
  np.testing.assert_array_equal(decayed['dense']['bias'], [0.0])


def test_level_gradients_become_means_over_their_weights():
  params = _params()
  grads = {'conv': {'weight_quantizer': {'levels': jnp.array([[3.0, 4.0, 8.0, 5.0]]),
                                         'index': jnp.zeros((4, 1))}, 'bias': jnp.zeros(1)},
           'dense': {'kernel': jnp.zeros((1, 1)), 'bias': jnp.zeros(1)}}
  normalised, _ = optim.normalize_level_gradients().update(grads, None, params)
  # index rounds to 0, 2, 2, 3: counts 1, 0, 2, 1 (an unused level keeps its gradient).
  np.testing.assert_allclose(normalised['conv']['weight_quantizer']['levels'], [[3.0, 4.0, 4.0, 5.0]])


def test_symmetric_level_counts_fold_both_halves():
  params = {'half_levels': jnp.array([[0.5, 1.5]]), 'index': jnp.array([[0.0], [1.0], [2.0], [2.0]])}
  np.testing.assert_array_equal(dq_weight_update.level_counts(params)["half_levels"],
                                [[1.0 + 2.0, 1.0]])
  assert dq_weight.level_table(params).tolist() == [[-1.5, -0.5, 0.5, 1.5]]


class _CNN(nn.Module):
  """Two DQ layers, one with a symmetric level table."""

  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Conv(4, (3, 3))(x))
    for name, symmetric in (('plain', False), ('symmetric', True)):
      x = nn.relu(QuantConv(4, (3, 3), w_bits=2, a_bits=2, use_running_average=False,
                            weight_options={'symmetric': symmetric}, name=name)(x))
    return nn.Dense(3)(x.mean((1, 2)))


def _train_with_l2_in_loss(l2_leaves, steps=2):
  """A few wrap_optimizer steps of a loss with an L2 term on `l2_leaves(params)`."""
  x = jax.random.normal(jax.random.PRNGKey(1), (4, 6, 6, 3))
  labels = jnp.arange(4) % 3
  variables = _CNN().init(jax.random.PRNGKey(0), x)
  params, stats = variables['params'], variables['quant_stats']
  tx = optim.wrap_optimizer(optax.sgd(0.1, momentum=0.9), weight_decay=1e-4,
                            decay_float_kernels=False)

  @jax.jit
  def step(params, opt_state, stats):
    def loss_fn(params):
      logits, new = _CNN().apply({'params': params, 'quant_stats': stats}, x,
                                 mutable=['quant_stats'])
      l2 = sum(jnp.sum(p ** 2) for p in l2_leaves(params))
      return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean() + 5e-5 * l2, new
    grads, new = jax.grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, new['quant_stats']

  opt_state = tx.init(params)
  for _ in range(steps):
    params, opt_state, stats = step(params, opt_state, stats)
  jax.effects_barrier()
  return params


def _masked(params):
  return [p for p, decay in zip(jax.tree.leaves(params), jax.tree.leaves(optim.decay_mask(params)))
          if decay]


def test_l2_on_dq_parameters_in_the_loss_warns_once_naming_decay_mask(monkeypatch):
  monkeypatch.setattr(gradients, '_warned', set())
  every_matrix = lambda params: [p for p in jax.tree.leaves(params) if p.ndim > 1]
  with pytest.warns(UserWarning, match=r'DQ weights at plain/weight_quantizer, '
                    r'symmetric/weight_quantizer receive gradients .*decay_mask'):
    _train_with_l2_in_loss(every_matrix)
  with warnings.catch_warnings():  # once per layer
    warnings.simplefilter('error')
    _train_with_l2_in_loss(every_matrix)


def test_l2_masked_with_decay_mask_trains_without_a_warning(monkeypatch):
  monkeypatch.setattr(gradients, '_warned', set())
  with warnings.catch_warnings():
    warnings.simplefilter('error')
    params = _train_with_l2_in_loss(_masked, steps=5)
  quantizers.validate_params(params)
