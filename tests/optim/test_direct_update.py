import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dqnn import optim
from dqnn.quantizers import dq_weight
from dqnn.quantizers import levels as lv


def _update(params, steps, **options):
  updates, _ = optim.direct_update(**options).update(steps, optim.direct_update().init(params),
                                                     params)
  return updates


@pytest.mark.parametrize('residual, expected_index', [
    (True, [1.0 + 0.3 / 0.9, 1.0 + 0.3 / 0.9, 3.5]),
    (False, [1.0, 1.0, 3.0]),
])
def test_direct_update_matches_the_spec_by_hand(residual, expected_index):
  # levels 0,1,2,3; index 1.0, 2.3, 3.0 -> s = 1.0, 2.3, 3.0; steps u = +0.4, -0.9, +0.7
  # targets t = 1.4, 1.4, 3.7; levels' = 0, 1.1, 2, 3 (v moves level 1 by 0.1)
  # s^-1(1.4) = 1 + (1.4 - 1.1) / 0.9; s^-1(3.7) = 3.7, clipped to the domain end 3.5.
  params = {'levels': jnp.array([[0.0, 1.0, 2.0, 3.0]]), 'index': jnp.array([[1.0], [2.3], [3.0]])}
  steps = {'levels': jnp.array([[0.0, 0.1, 0.0, 0.0]]), 'index': jnp.array([[0.4], [-0.9], [0.7]])}
  updates = _update(params, steps, residual=residual)
  np.testing.assert_allclose(params['index'] + updates['index'], np.array(expected_index)[:, None],
                             rtol=1e-6)
  np.testing.assert_allclose(updates['levels'], steps['levels'], atol=1e-7)


def test_lloyd_refits_levels_to_the_mean_of_their_targets():
  params = {'levels': jnp.array([[0.0, 1.0, 2.0, 3.0]]),
            'index': jnp.array([[0.0], [0.0], [2.0], [3.0]])}
  steps = {'levels': jnp.zeros((1, 4)), 'index': jnp.array([[0.2], [-0.2], [0.4], [0.0]])}
  updates = _update(params, steps, level_update='lloyd')
  # targets 0.2, -0.2 (level 0, mean 0), 2.4 (level 2), 3.0 (level 3); level 1 has none.
  np.testing.assert_allclose(params['levels'] + updates['levels'], [[0.0, 1.0, 2.4, 3.0]], atol=1e-6)
  np.testing.assert_allclose(params['index'] + updates['index'], [[0.2], [-0.2], [2.0], [3.0]],
                             atol=1e-6)


def test_quantized_weights_move_by_gradient_descent():
  # With an integral index, w_q' is the level of levels' nearest to w_q + u.
  kernel = jax.random.normal(jax.random.PRNGKey(0), (64, 3))
  params = dq_weight.params_from_kernel(kernel, 2)
  params = {**params, 'index': jnp.round(params['index'])}
  steps = {'levels': jnp.zeros_like(params['levels']),
           'index': 0.3 * jax.random.normal(jax.random.PRNGKey(1), (64, 3))}
  updates = _update(params, steps, residual=False)
  new = jax.tree.map(jnp.add, params, updates)
  target = dq_weight.quantized_weight(params) + steps['index']
  table = params['levels']
  nearest = jnp.take_along_axis(
      table.T, jnp.argmin(jnp.abs(target[:, :, None] - table[None]), axis=-1), axis=0)
  np.testing.assert_allclose(dq_weight.quantized_weight(new), nearest, atol=1e-6)


@hypothesis.settings(deadline=None, max_examples=25)
@hypothesis.given(
    bits=st.sampled_from([1, 2, 3]),
    symmetric=st.booleans(),
    per_channel=st.booleans(),
    residual=st.booleans(),
    level_update=st.sampled_from(['gradient', 'lloyd']),
    step_scales=st.lists(st.tuples(st.floats(0, 2), st.floats(0, 2)), min_size=1, max_size=4),
    seed=st.integers(0, 2 ** 16))
def test_any_sequence_of_direct_updates_keeps_weights_on_increasing_levels(
    bits, symmetric, per_channel, residual, level_update, step_scales, seed):
  key = jax.random.PRNGKey(seed)
  params = dq_weight.params_from_kernel(jax.random.normal(key, (3, 3, 2, 4)), bits,
                                        per_channel=per_channel, symmetric=symmetric)
  level_name = 'half_levels' if symmetric else 'levels'
  for weight_scale, level_scale in step_scales:
    key, k1, k2 = jax.random.split(key, 3)
    steps = {'index': weight_scale * jax.random.normal(k1, params['index'].shape),
             level_name: level_scale * jax.random.normal(k2, params[level_name].shape)}
    params = jax.tree.map(jnp.add, params,
                          _update(params, steps, residual=residual, level_update=level_update))
    table = dq_weight.level_table(params)
    assert bool(jnp.all(jnp.diff(table, axis=-1) > 0)), table
    assert bool(jnp.all((params['index'] >= -0.5 - 1e-5) & (params['index'] <= 2 ** bits - 0.5 + 1e-5)))
    w_q = lv.as_groups(dq_weight.quantized_weight(params), table.shape[0])
    on_a_level = jnp.any(w_q[:, :, None] == table[None], axis=-1)
    assert bool(jnp.all(on_a_level))
    if symmetric:
      np.testing.assert_allclose(table, -table[:, ::-1], atol=1e-5)


def test_direct_update_requires_params():
  with pytest.raises(ValueError, match='needs the parameters'):
    optim.direct_update().update({}, optim.direct_update().init({}))


def test_unknown_level_update_fails_clearly():
  with pytest.raises(ValueError, match='level_update must be one of gradient, lloyd'):
    optim.direct_update(level_update='kmeans')
