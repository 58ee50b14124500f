"""Level-table arithmetic: the elementwise forms (up to 16 levels) against plain references."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dqnn.quantizers import levels as lv


def _table(num_levels, num_groups=3, seed=0):
  gaps = jax.random.uniform(jax.random.key(seed), (num_groups, num_levels), minval=0.1,
                            maxval=1.0)
  return jnp.cumsum(gaps, axis=-1) - 2.0


def _reference_soft_value(index, table):
  """Interpolation between the two levels around `index`, extended linearly past the ends."""
  out = np.empty(index.shape)
  num_levels = table.shape[-1]
  for n, g in np.ndindex(*index.shape):
    lower = int(np.clip(np.floor(index[n, g]), 0, num_levels - 2))
    lo, hi = table[g, lower], table[g, lower + 1]
    out[n, g] = lo + (index[n, g] - lower) * (hi - lo)
  return out


@pytest.mark.parametrize('num_levels', [2, 4, 8, 16, 32])
def test_lookup_is_exactly_the_table_entry(num_levels):
  table = _table(num_levels)
  chosen = jax.random.randint(jax.random.key(1), (50, 3), 0, num_levels)
  expected = np.take_along_axis(np.asarray(table).T, np.asarray(chosen), axis=0)
  np.testing.assert_array_equal(lv.lookup(table, chosen), expected)


@pytest.mark.parametrize('num_levels', [2, 4, 16, 32])
def test_soft_value_interpolates_and_fractional_index_inverts_it(num_levels):
  table = _table(num_levels)
  index = jax.random.uniform(jax.random.key(2), (60, 3), minval=-0.5, maxval=num_levels - 0.5)
  values = lv.soft_value(index, table)
  np.testing.assert_allclose(values, _reference_soft_value(np.asarray(index), np.asarray(table)),
                             rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(lv.fractional_index(values, table), index, atol=1e-4)
  # At integer indices s is the level itself; rounding the inverse picks the nearest level.
  integers = jnp.broadcast_to(jnp.arange(num_levels)[:, None], (num_levels, 3)).astype(jnp.float32)
  np.testing.assert_allclose(lv.soft_value(integers, table), np.asarray(table).T, atol=1e-5)
  points = jax.random.uniform(jax.random.key(3), (200, 3), minval=-3.0, maxval=num_levels)
  nearest = np.argmin(np.abs(np.asarray(points)[:, :, None] - np.asarray(table)[None]), axis=-1)
  np.testing.assert_array_equal(
      lv.round_index(lv.fractional_index(points, table), num_levels), nearest)


def _reference_channel_level_sums(x, levels):
  """Per channel and level, by a loop over the levels on the float64 values."""
  channels = np.asarray(x, np.float64).reshape(-1, x.shape[-1])
  levels = np.asarray(levels, np.float64)
  nearest = np.argmin(np.abs(channels[..., None] - levels), axis=-1)
  count = np.stack([np.sum(nearest == k, axis=0) for k in range(levels.size)], axis=-1)
  residual = np.stack([np.sum(np.where(nearest == k, channels - levels[k], 0), axis=0)
                       for k in range(levels.size)], axis=-1)
  return count, residual, np.sum(channels ** 2, axis=0)


@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize('num_levels', [2, 4, 16, 256])
def test_channel_level_sums_match_a_per_level_reference(num_levels, dtype):
  levels = jnp.sort(jax.random.uniform(jax.random.key(0), (num_levels,), maxval=3.0))
  x = (jax.random.uniform(jax.random.key(1), (6, 5, 7, 4), maxval=3.5) - 0.2).astype(dtype)
  sums = lv.channel_level_sums(x, levels, energy=True)
  count, residual, energy = _reference_channel_level_sums(x, levels)
  np.testing.assert_array_equal(sums.count, count)
  np.testing.assert_allclose(sums.residual, residual, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(sums.energy, energy, rtol=1e-5)
  assert lv.channel_level_sums(x, levels).energy is None


@pytest.mark.parametrize('num_levels', [2, 4, 16, 256])
def test_nearest_value_of_bfloat16_is_the_float32_choice_rounded_once(num_levels):
  # Comparisons in float32 on the exactly upcast input: the bfloat16 result is the float32
  # result rounded, never a choice made on rounded midpoints.
  levels = jnp.sort(jax.random.uniform(jax.random.key(2), (num_levels,), maxval=3.0))
  x = jax.random.uniform(jax.random.key(3), (4000,), minval=-0.5, maxval=3.5).astype(jnp.bfloat16)
  nearest = lv.nearest_value_1d(x, levels)
  assert nearest.dtype == jnp.bfloat16
  np.testing.assert_array_equal(nearest, lv.nearest_value_1d(x.astype(jnp.float32), levels)
                                .astype(jnp.bfloat16))
  chosen = np.argmin(np.abs(np.asarray(x, np.float64)[:, None] - np.asarray(levels)), axis=-1)
  np.testing.assert_array_equal(lv.nearest_level_1d(x, levels), chosen)
