"""The latent-weight control for DQ: DQ's levels, a float kernel moved by straight-through."""
import jax
import jax.numpy as jnp
import numpy as np

from dqnn import optim
from dqnn.quantizers import dq_weight
from dqnn.quantizers import levels as lv
from dqnn.quantizers.latent_levels import LatentLevelsWeight

SHAPE = (3, 3, 4, 6)


def _init(bits=2):
  quantizer = LatentLevelsWeight(bits=bits)
  return quantizer, quantizer.init(jax.random.key(0), SHAPE)


def test_levels_start_as_dqs_and_weights_take_the_nearest_level():
  quantizer, variables = _init()
  params = variables['params']
  expected = dq_weight.params_from_kernel(params['kernel'], 2)['levels']
  np.testing.assert_array_equal(params['levels'], expected)
  w_q = quantizer.apply(variables, SHAPE)
  groups = lv.as_groups(params['kernel'], SHAPE[-1])
  nearest = jnp.take_along_axis(
      params['levels'].T, lv.nearest_index(groups, params['levels']), axis=0)
  np.testing.assert_array_equal(w_q, nearest.reshape(SHAPE))
  for channel in range(SHAPE[-1]):  # Exactly the channel's levels, no rounding noise.
    assert set(np.unique(w_q[..., channel])) <= set(np.asarray(params['levels'][channel]))


def test_kernel_gets_the_gradient_straight_through_and_levels_their_mean():
  quantizer, variables = _init()
  params = variables['params']
  upstream = jax.random.normal(jax.random.key(1), SHAPE)
  grads = jax.grad(lambda p: jnp.sum(quantizer.apply({'params': p}, SHAPE) * upstream))(params)
  np.testing.assert_array_equal(grads['kernel'], upstream)
  index = lv.nearest_index(lv.as_groups(params['kernel'], SHAPE[-1]), params['levels'])
  g = lv.as_groups(upstream, SHAPE[-1])
  for channel in range(SHAPE[-1]):
    for level in range(4):
      chosen = index[:, channel] == level
      expected = g[chosen, channel].mean() if chosen.any() else 0.0
      np.testing.assert_allclose(grads['levels'][channel, level], expected, rtol=1e-5,
                                 atol=1e-7)


def test_optimizer_groups_the_kernel_as_weights_and_the_levels_as_levels():
  _, variables = _init()
  assert optim.parameter_groups(variables['params']) == {'kernel': 'weights',
                                                          'levels': 'levels'}
