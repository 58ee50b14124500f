"""Straight-through helpers for the latent-weight baselines.

Each returns its forward value exactly: the gradient path is added as `x - stop_gradient(x)`,
which is exactly zero, rather than as `x + stop_gradient(q - x)`, whose rounding spreads one
quantization level over several nearby floats.
"""
import jax
import jax.numpy as jnp


def _straight_through(x: jax.Array) -> jax.Array:
  """Exactly zero forward, identity gradient to `x` backward."""
  return x - jax.lax.stop_gradient(x)


def round_ste(x: jax.Array) -> jax.Array:
  """`round(x)` forward, identity backward."""
  return jax.lax.stop_gradient(jnp.round(x)) + _straight_through(x)


def replace_ste(x: jax.Array, q: jax.Array) -> jax.Array:
  """`q` forward, gradient passed straight to `x` backward."""
  return jax.lax.stop_gradient(q) + _straight_through(x)


def scale_grad(x: jax.Array, scale) -> jax.Array:
  """`x` forward, gradient multiplied by `scale` backward (LSQ's step-size gradient scale)."""
  return jax.lax.stop_gradient(x) + _straight_through(x * scale)
