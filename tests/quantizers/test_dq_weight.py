import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dqnn import quantizers
from dqnn.quantizers import dq_weight
from dqnn.quantizers import levels as lv


def test_gradients_match_the_spec_on_a_hand_worked_example():
  levels = jnp.array([[-1.0, 0.0, 1.0, 2.0]])
  index = jnp.array([[0.2], [1.6], [2.4], [-0.3], [3.1]])  # rounds to 0, 2, 2, 0, 3
  w_q, vjp = jax.vjp(dq_weight.quantize, levels, index)
  np.testing.assert_array_equal(w_q[:, 0], [-1.0, 1.0, 1.0, -1.0, 2.0])
  g_q = jnp.array([[1.0], [2.0], [3.0], [4.0], [5.0]])
  d_levels, d_index = vjp(g_q)
  np.testing.assert_array_equal(d_levels, [[1.0 + 4.0, 0.0, 2.0 + 3.0, 5.0]])
  np.testing.assert_array_equal(d_index, g_q)


def test_per_channel_gradients_sum_within_each_group():
  levels = jnp.array([[0.0, 1.0], [10.0, 20.0]])
  index = jnp.array([[0.0, 1.0], [1.0, 1.0], [0.0, 0.0]])
  w_q, vjp = jax.vjp(dq_weight.quantize, levels, index)
  np.testing.assert_array_equal(w_q, [[0.0, 20.0], [1.0, 20.0], [0.0, 10.0]])
  d_levels, _ = vjp(jnp.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]))
  np.testing.assert_array_equal(d_levels, [[1.0 + 5.0, 3.0], [6.0, 2.0 + 4.0]])


@pytest.mark.parametrize('bits, per_channel, symmetric', [
    (1, True, False), (2, False, False), (3, True, True), (4, False, True), (8, True, False),
    (1, False, True), (2, True, True)])
def test_every_bit_width_and_grouping_initialises_to_valid_tables(bits, per_channel, symmetric):
  kernel = jax.random.normal(jax.random.PRNGKey(bits), (3, 3, 8, 6))
  params = dq_weight.params_from_kernel(kernel, bits, per_channel=per_channel, symmetric=symmetric)
  quantizers.validate_params(params)
  table = dq_weight.level_table(params)
  assert table.shape == (6 if per_channel else 1, 2 ** bits)
  if symmetric:
    np.testing.assert_allclose(table, -table[:, ::-1], atol=1e-6)
  w_q = dq_weight.quantized_weight(params)
  assert w_q.shape == kernel.shape
  columns = lv.as_groups(w_q, table.shape[0])
  for g in range(table.shape[0]):
    assert set(np.asarray(columns[:, g]).tolist()) <= set(np.asarray(table[g]).tolist())
  # k-means levels represent the kernel better than its mean does.
  assert jnp.mean((w_q - kernel) ** 2) < jnp.var(kernel)


def test_index_rounds_to_the_nearest_level():
  kernel = jax.random.normal(jax.random.PRNGKey(0), (200, 4))
  params = dq_weight.params_from_kernel(kernel, 2)
  table = params['levels']
  w_q = dq_weight.quantized_weight(params)
  nearest = jnp.min(jnp.abs(kernel[:, :, None] - table[None]), axis=-1)
  np.testing.assert_allclose(jnp.abs(w_q - kernel), nearest, atol=1e-6)


def test_module_params_are_levels_and_index():
  module = dq_weight.DQWeight(bits=2)
  variables = module.init(jax.random.PRNGKey(0), (3, 3, 4, 8))
  assert jax.tree.map(jnp.shape, variables) == {
      'params': {'levels': (8, 4), 'index': (3, 3, 4, 8)}}
  assert module.apply(variables, (3, 3, 4, 8)).shape == (3, 3, 4, 8)


@pytest.mark.parametrize('bits', [0, 9, 5, 16, 2.0])
def test_unsupported_bits_fail_clearly(bits):
  with pytest.raises(ValueError, match='w_bits must be one of 1, 2, 3, 4, 8 or 32'):
    dq_weight.params_from_kernel(jnp.ones((3, 4)), bits)


def test_wrong_kernel_rank_fails_clearly():
  with pytest.raises(ValueError, match='rank >= 2'):
    dq_weight.params_from_kernel(jnp.ones((5,)), 2)
  with pytest.raises(ValueError, match='rank >= 2'):
    dq_weight.DQWeight(bits=2).init(jax.random.PRNGKey(0), (5,))


def test_negative_level_gaps_on_restore_fail_clearly():
  params = dq_weight.params_from_kernel(jax.random.normal(jax.random.PRNGKey(0), (9, 4)), 2)
  restored = {'block': {'weight_quantizer': {**params,
                                             'levels': params['levels'][:, ::-1]}}}
  with pytest.raises(ValueError, match='block/weight_quantizer are not strictly increasing'):
    quantizers.validate_params(restored)
  mismatched = {'conv': {'levels': params['levels'], 'index': jnp.zeros((9, 5))}}
  with pytest.raises(ValueError, match='does not match 4 level groups'):
    quantizers.validate_params(mismatched)


@pytest.mark.parametrize('bad_index', [-0.50001, 3.6, 1e6])
def test_index_outside_its_domain_fails_naming_the_likely_cause(bad_index):
  params = dq_weight.params_from_kernel(jax.random.normal(jax.random.PRNGKey(0), (9, 4)), 2)
  params = {'conv': {**params, 'index': params['index'].at[0, 0].set(bad_index)}}
  with pytest.raises(ValueError, match=r'conv leaves its domain \[-1/2, 3.5\]: 1 entries outside'
                     r'.*wrap_optimizer.*project_dq_params.*checkpoint'):
    quantizers.validate_params(params)


def test_stacked_layers_are_validated_layer_by_layer():
  one = dq_weight.params_from_kernel(jax.random.normal(jax.random.PRNGKey(0), (9, 4)), 2)
  stacked = jax.tree.map(lambda a: jnp.stack([a, a]), one)
  quantizers.validate_params({'scan': stacked})
  reversed_second = stacked['levels'].at[1].set(stacked['levels'][1, :, ::-1])
  with pytest.raises(ValueError, match='not strictly increasing'):
    quantizers.validate_params({'scan': {**stacked, 'levels': reversed_second}})
