"""LQ-Nets, LSQ, DoReFa and PACT: the formulas each baseline is defined by."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dqnn import quantizers
from dqnn.quantizers import dorefa, lqnets, lsq, pact


def test_lsq_step_gradient_is_the_papers():
  # d q / d s = round(v) - v inside the range, -Qn / Qp outside; times the gradient scale.
  x = jnp.array([0.26, -0.74, 3.0, -5.0])
  step = 0.5
  grad = jax.grad(lambda s: jnp.sum(lsq.lsq_quantize(x, s, -2, 1, 0.25)), argnums=0)(step)
  v = x / step  # 0.52, -1.48, 6 (clips to 1), -10 (clips to -2)
  expected = (jnp.round(v[0]) - v[0]) + (jnp.round(v[1]) - v[1]) + 1 + (-2)
  np.testing.assert_allclose(grad, 0.25 * expected, rtol=1e-5)


def test_lsq_weights_need_two_bits():
  with pytest.raises(ValueError, match='needs >= 2 bits'):
    lsq.LSQWeight(bits=1).init(jax.random.PRNGKey(0), (3, 4))


def test_pact_clip_gets_the_gradient_of_clipped_inputs_only():
  module = pact.PACTActivation(bits=2)
  x = jnp.array([[0.1, 0.5, 2.0, 3.0]])
  variables = {'params': {'clip': jnp.array(1.0)}}
  grad = jax.grad(lambda p: jnp.sum(module.apply({'params': p}, x) * jnp.array([1., 2., 3., 4.])))(
      variables['params'])
  np.testing.assert_allclose(grad['clip'], 3.0 + 4.0)
  np.testing.assert_allclose(module.apply(variables, x), [[0.0, 2 / 3, 1.0, 1.0]], rtol=1e-6)


@pytest.mark.parametrize('bits', [1, 2, 3])
def test_dorefa_weights_take_2_pow_bits_values(bits):
  kernel = dorefa.DoReFaWeight(bits=bits)
  variables = kernel.init(jax.random.PRNGKey(0), (3, 3, 8, 8))
  w = kernel.apply(variables, (3, 3, 8, 8))
  assert len(np.unique(np.asarray(w))) == 2 ** bits
  assert float(jnp.max(jnp.abs(w))) <= 1.0 + 1e-6


def test_dorefa_activations_are_uniform_on_the_unit_interval():
  x = jnp.array([[-1.0, 0.1, 0.5, 0.9, 7.0]])
  out = dorefa.DoReFaActivation(bits=2).apply({}, x)
  np.testing.assert_allclose(out, [[0.0, 0.0, 2 / 3, 1.0, 1.0]], rtol=1e-6)


def test_lqnets_refit_reduces_quantization_error():
  kernel = jax.random.normal(jax.random.PRNGKey(0), (512, 4))
  start = jnp.ones((4, 2)) * jnp.array([0.1, 0.2])
  fitted = start
  for _ in range(5):
    fitted = lqnets.fit_basis(kernel, fitted, 2)
  assert _lq_error(kernel, fitted) < 0.5 * _lq_error(kernel, start)


def _lq_error(kernel, basis):
  levels = lqnets.basis_levels(basis, 2)  # (G, L)
  nearest = jnp.min(jnp.abs(kernel[..., None] - levels[None]), axis=-1)
  return float(jnp.mean(nearest ** 2))


def test_lqnets_basis_is_state_updated_in_training_only():
  module = lqnets.LQNetsWeight(bits=2)
  variables = module.init(jax.random.PRNGKey(0), (3, 3, 4, 8))
  assert set(variables) == {'params', 'quant_stats'}
  variables = {**variables, 'params': {'kernel': variables['params']['kernel'] * 3}}
  _, updated = module.apply(variables, (3, 3, 4, 8), mutable=['quant_stats'])
  assert not np.allclose(updated['quant_stats']['basis'], variables['quant_stats']['basis'])


def test_unknown_quantizer_names_and_options_fail_clearly():
  with pytest.raises(ValueError, match="Unknown weight quantizer 'xnor'; choose one of dq, "):
    quantizers.weight_quantizer('xnor', 2, None)
  with pytest.raises(ValueError, match=r"Unknown options \['residual'\] for activation quantizer "
                     r"'pact' \(PACTActivation\); it takes no options"):
    quantizers.activation_quantizer('pact', 2, {'residual': True})
  # LQ-Nets' presets are not options of its own.
  with pytest.raises(ValueError, match="Unknown options .'weighting'. .*it takes eps, "):
    quantizers.activation_quantizer('lqnets', 2, {'weighting': 'channel'})
  with pytest.raises(ValueError, match="Option 'momentum' of activation quantizer 'dq' must be "
                                       "float; got 'high'"):
    quantizers.activation_quantizer('dq', 2, {'momentum': 'high'})
