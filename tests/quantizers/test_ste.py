import jax
import jax.numpy as jnp
import numpy as np

from dqnn.quantizers.ste import replace_ste, round_ste, scale_grad

X = jnp.linspace(-3.0, 3.0, 1001, dtype=jnp.float32) * 0.0952019


def test_forward_values_are_exact():
  """One quantization level is one float, so a 1-bit kernel takes exactly two values."""
  target = jnp.where(X >= 0, 0.0952019, -0.0952019)
  np.testing.assert_array_equal(replace_ste(X, target), target)
  np.testing.assert_array_equal(round_ste(X * 7.3), jnp.round(X * 7.3))
  np.testing.assert_array_equal(scale_grad(X, 0.37), X)
  assert len(np.unique(np.asarray(replace_ste(X, target)))) == 2


def test_gradients_are_straight_through():
  np.testing.assert_array_equal(jax.grad(lambda x: replace_ste(x, jnp.sign(x)).sum())(X),
                                np.ones_like(X))
  np.testing.assert_array_equal(jax.grad(lambda x: round_ste(x).sum())(X), np.ones_like(X))
  dx, dscale = jax.grad(lambda x, s: scale_grad(x, s).sum(), argnums=(0, 1))(X, 0.37)
  np.testing.assert_allclose(dx, np.full_like(X, 0.37), rtol=1e-6)
  np.testing.assert_allclose(dscale, X.sum(), rtol=1e-5)
