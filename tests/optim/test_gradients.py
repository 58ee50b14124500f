import jax.numpy as jnp
import numpy as np

from dqnn import optim
from dqnn.quantizers import dq_weight


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
  np.testing.assert_array_equal(optim.gradients.level_counts(params), [[1.0 + 2.0, 1.0]])
  assert dq_weight.level_table(params).tolist() == [[-1.5, -0.5, 0.5, 1.5]]
