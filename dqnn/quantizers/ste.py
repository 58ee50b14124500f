"""Straight-through helpers for the latent-weight baselines."""
import jax
import jax.numpy as jnp


def round_ste(x: jax.Array) -> jax.Array:
  """`round(x)` forward, identity backward."""
  return x + jax.lax.stop_gradient(jnp.round(x) - x)


def replace_ste(x: jax.Array, q: jax.Array) -> jax.Array:
  """`q` forward, gradient passed straight to `x` backward."""
  return x + jax.lax.stop_gradient(q - x)


def scale_grad(x: jax.Array, scale) -> jax.Array:
  """`x` forward, gradient multiplied by `scale` backward (LSQ's step-size gradient scale)."""
  return x * scale + jax.lax.stop_gradient(x - x * scale)
