import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dqnn.quantizers import dq_activation as dqa

LEVELS = jnp.array([0.0, 1.0, 2.0, 3.0])
# Channels last: channel 0 holds 0.4 and 1.2, channel 1 holds 2.0 and 5.0 (5.0 clips to 3).
X = jnp.array([[0.4, 2.0], [1.2, 5.0]])


def _vjp(weighting, task_grad_weight=0.0):
  out, vjp = jax.vjp(lambda x, lv: dqa.quantize(x, lv, weighting, 0.0, task_grad_weight), X, LEVELS)
  return out, vjp


def test_forward_is_the_nearest_level_with_clipping():
  out, _ = _vjp('channel')
  np.testing.assert_array_equal(out, [[0.0, 2.0], [1.0, 3.0]])


def test_gradients_match_the_spec_on_a_hand_worked_example():
  # dE/dl = -2/M sum_{x->l} w_c (x - l), M = 2 elements per channel.
  # DQ: w_0 = 1/mean(0.4^2, 1.2^2) = 1/0.8, w_1 = 1/mean(2^2, 5^2) = 1/14.5.
  _, vjp = _vjp('channel')
  grad_x, grad_levels = vjp(jnp.ones_like(X))
  np.testing.assert_allclose(grad_levels, [-1.25 * 0.4, -1.25 * 0.2, 0.0, -2.0 / 14.5], rtol=1e-6)
  np.testing.assert_array_equal(grad_x, [[1.0, 1.0], [1.0, 0.0]])  # clipped STE
  # Pooled (w_c = 1): the error of the large channel dominates the top level.
  _, vjp = _vjp('pooled')
  np.testing.assert_allclose(vjp(jnp.ones_like(X))[1], [-0.4, -0.2, 0.0, -2.0], rtol=1e-6)


def test_task_gradient_is_added_per_level_when_asked():
  _, vjp = _vjp('pooled', task_grad_weight=0.5)
  g = jnp.array([[1.0, 2.0], [3.0, 4.0]])
  np.testing.assert_allclose(vjp(g)[1], [-0.4 + 0.5, -0.2 + 1.5, 0.0 + 1.0, -2.0 + 2.0], rtol=1e-6)


def _reference_weighted_level_sums(x, levels, weighting, eps):
  """The definition, in float64: every element carries its channel's weight w_c / M."""
  channels = np.asarray(x, np.float64).reshape(-1, x.shape[-1])
  levels = np.asarray(levels, np.float64)
  energy = np.mean(channels ** 2, axis=0)
  scale = {'channel': energy, 'rms': np.sqrt(energy)}.get(weighting)
  weights = (np.ones_like(energy) if scale is None
             else 1 / (scale + eps * scale.mean())) / channels.shape[0]
  nearest = np.argmin(np.abs(channels[..., None] - levels), axis=-1)
  hits = nearest[..., None] == np.arange(levels.size)
  mass = np.sum(np.where(hits, weights[:, None], 0), axis=(0, 1))
  moment = np.sum(np.where(hits, (weights * channels)[..., None], 0), axis=(0, 1))
  return mass, moment


@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize('weighting', dqa.WEIGHTINGS)
def test_fused_level_sums_match_the_reference_formulation(weighting, dtype):
  x = _high_variance_channels()[:8].astype(dtype)
  levels = jnp.array([0.0, 0.7, 1.9, 4.0])
  mass, moment = dqa.weighted_level_sums(x, levels, weighting, 1e-3)
  expected_mass, expected_moment = _reference_weighted_level_sums(x, levels, weighting, 1e-3)
  np.testing.assert_allclose(mass, expected_mass, rtol=1e-5)
  np.testing.assert_allclose(moment, expected_moment, rtol=1e-5)


@pytest.mark.parametrize('weighting', ['channel', 'pooled'])
def test_bfloat16_input_quantizes_and_differentiates_as_its_float32_upcast(weighting):
  # No float32 copy of x is made any more; the result must be that of the exact upcast.
  x = _high_variance_channels()[:8].astype(jnp.bfloat16)
  levels = jnp.array([0.0, 0.7, 1.9, 4.0])
  g = jax.random.normal(jax.random.PRNGKey(5), x.shape, jnp.bfloat16)
  run = lambda x: jax.vjp(lambda x, lv: dqa.quantize(x, lv, weighting, 1e-3, 0.5), x, levels)
  out, vjp = run(x)
  out32, vjp32 = run(x.astype(jnp.float32))
  assert out.dtype == jnp.bfloat16
  np.testing.assert_array_equal(out, out32.astype(jnp.bfloat16))
  grad_x, grad_levels = vjp(g)
  grad_x32, grad_levels32 = vjp32(g.astype(jnp.float32))
  assert grad_x.dtype == jnp.bfloat16
  np.testing.assert_array_equal(grad_x, grad_x32.astype(jnp.bfloat16))
  np.testing.assert_allclose(grad_levels, grad_levels32, rtol=1e-5)


@pytest.mark.parametrize('weighting', ['channel', 'pooled'])
def test_closed_form_refit_of_bfloat16_input_is_that_of_its_upcast(weighting):
  x = _high_variance_channels()[:8].astype(jnp.bfloat16)
  module = dqa.DQActivation(bits=2, weighting=weighting, momentum=0.5)
  variables = module.init(jax.random.PRNGKey(0), x)
  out, updated = module.apply(variables, x, mutable=['quant_stats'])
  out32, updated32 = module.apply(variables, x.astype(jnp.float32), mutable=['quant_stats'])
  np.testing.assert_array_equal(out, out32.astype(jnp.bfloat16))
  np.testing.assert_allclose(updated['quant_stats']['basis'], updated32['quant_stats']['basis'],
                             rtol=1e-6)


def _high_variance_channels():
  scale = jnp.ones(32).at[:3].set(10.0)  # 3 channels with 100x the variance of the rest
  return jax.nn.relu(jax.random.normal(jax.random.PRNGKey(0), (64, 8, 8, 32)) * scale)


def _fit(module, x, steps):
  variables = module.init(jax.random.PRNGKey(1), x)
  if module.update == 'closed_form':
    for _ in range(steps):
      _, variables = module.apply(variables, x, mutable=['quant_stats'])
    return module.apply(variables, x)
  params = variables['params']
  optimizer = optax.adam(0.05)
  state = optimizer.init(params)
  grad = jax.jit(jax.grad(lambda p: jnp.sum(module.apply({'params': p}, x))))
  for _ in range(steps):
    updates, state = optimizer.update(grad(params), state)
    params = optax.apply_updates(params, updates)
  return module.apply({'params': params}, x)


@pytest.mark.parametrize('update', ['gradient', 'closed_form'])
def test_channel_weighting_beats_pooled_on_most_channels(update):
  x = _high_variance_channels()
  errors = {}
  for weighting in ('channel', 'pooled'):
    module = dqa.DQActivation(bits=2, weighting=weighting, update=update, momentum=0.0)
    q = _fit(module, x, steps=150 if update == 'gradient' else 20)
    errors[weighting] = float(jnp.median(dqa.per_channel_relative_error(x, q)))
  assert errors['channel'] < 0.5 * errors['pooled'], errors


def test_rms_weighting_trades_between_channel_and_pooled():
  # Relative error of the typical channel and absolute error of the whole tensor: each
  # weighting is best at what it weights, and 'rms' lands strictly between the two.
  x = _high_variance_channels()
  relative, absolute = {}, {}
  for weighting in dqa.WEIGHTINGS:
    q = _fit(dqa.DQActivation(bits=2, weighting=weighting, momentum=0.0), x, steps=20)
    relative[weighting] = float(jnp.median(dqa.per_channel_relative_error(x, q)))
    absolute[weighting] = float(jnp.mean((x - q) ** 2))
  assert relative['channel'] < relative['rms'] < relative['pooled'], relative
  assert absolute['pooled'] < absolute['rms'] < absolute['channel'], absolute


@pytest.mark.parametrize('parameterisation', ['basis', 'free', 'uniform'])
def test_closed_form_and_gradient_agree_on_the_optimum(parameterisation):
  x = _high_variance_channels()
  fits = [dqa.per_channel_relative_error(x, _fit(dqa.DQActivation(
      bits=2, parameterisation=parameterisation, update=update, momentum=0.0), x, steps))
          for update, steps in (('closed_form', 30), ('gradient', 300))]
  np.testing.assert_allclose(jnp.median(fits[0]), jnp.median(fits[1]), rtol=0.1)


@pytest.mark.parametrize('bits', [1, 8])
def test_one_and_eight_bits_give_that_many_levels(bits):
  x = jax.nn.relu(jax.random.normal(jax.random.PRNGKey(0), (16, 4, 4, 8))) * 3
  module = dqa.DQActivation(bits=bits, parameterisation='free')
  q = module.apply(module.init(jax.random.PRNGKey(0), x), x)
  assert 1 < len(np.unique(q)) <= 2 ** bits
  assert jnp.mean((q - x) ** 2) < jnp.mean(x ** 2)


def test_closed_form_state_changes_only_when_mutable():
  x = _high_variance_channels()
  module = dqa.DQActivation(bits=2, update='closed_form')
  variables = module.init(jax.random.PRNGKey(0), x)
  assert 'params' not in variables and 'basis' in variables['quant_stats']
  _, updated = module.apply(variables, x, mutable=['quant_stats'])
  assert not np.allclose(updated['quant_stats']['basis'], variables['quant_stats']['basis'])


@pytest.mark.parametrize('weighting', ['channel', 'pooled'])
def test_closed_form_basis_is_finite_when_two_levels_hold_every_value(weighting):
  # Values only at the lowest and the highest level leave one basis direction undetermined
  # (seen: a batch of 2 after BatchNorm + ReLU); the solve used to return NaN there.
  x = jnp.tile(jnp.array([[0.0], [1.2]]), (1, 8))
  module = dqa.DQActivation(bits=2, weighting=weighting, update='closed_form', momentum=0.0)
  variables = {'quant_stats': {'basis': jnp.array([0.4, 0.8])}}
  _, updated = module.apply(variables, x, mutable=['quant_stats'])
  basis = updated['quant_stats']['basis']
  assert np.all(np.isfinite(basis))
  # The top level (code 1,1) moves onto 1.2; the undetermined direction keeps its share.
  np.testing.assert_allclose(jnp.sum(basis), 1.2, rtol=1e-4)
  np.testing.assert_allclose(basis[1] - basis[0], 0.4, rtol=1e-3)


def test_signed_levels_cover_negative_inputs():
  x = jax.random.normal(jax.random.PRNGKey(0), (32, 8))
  module = dqa.DQActivation(bits=2, signed=True)
  q = module.apply(module.init(jax.random.PRNGKey(0), x), x)
  assert jnp.min(q) < 0 < jnp.max(q)


@pytest.mark.parametrize('bits', [0, 9])
def test_unsupported_bits_fail_clearly(bits):
  with pytest.raises(ValueError, match='a_bits must be one of'):
    dqa.DQActivation(bits=bits).init(jax.random.PRNGKey(0), jnp.ones((2, 3)))


def test_unknown_options_fail_clearly():
  with pytest.raises(ValueError, match='weighting must be one of channel, rms, pooled'):
    dqa.DQActivation(bits=2, weighting='mean').init(jax.random.PRNGKey(0), jnp.ones((2, 3)))
