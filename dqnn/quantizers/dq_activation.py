"""DQ activation quantizer: nearest-level quantization with per-channel error weighting.

One level table per tensor (layer), `L = 2**bits` levels, parameterised as
- `basis`: levels `{e . v : e in {0,1}^b}` (bit-operation compatible, as in LQ-Nets);
- `free`: `L` free levels, used sorted;
- `uniform`: `clip * k / (L-1)`.
For inputs that can be negative (`signed=True`), the codes are `{-1,1}^b` and the uniform grid
spans `[-clip, clip]`.
The levels minimise the weighted error `E = sum_c w_c mean_{n,h,w} (x_c - Q(x_c))^2` with
`w_c = 1 / (e_c + eps * mean_c' e_c')` for the channel energy `e_c = mean x_c^2`
(`weighting='channel'`, DQ: every channel's relative error counts alike), or for its RMS
`e_c = sqrt(mean x_c^2)` (`weighting='rms'`: half-way, high-energy channels count more but not
in proportion to their energy), or `w_c = 1` (`weighting='pooled'`, the LQ-Nets baseline): by
closed-form weighted least squares plus a moving average (`update='closed_form'`, the default,
chosen by measurement; the levels are state in the `quant_stats` collection, updated only when
that collection is mutable) or by gradient (`update='gradient'`, the levels are `params`). See
docs/method.md.
"""
import functools
import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp

from dqnn.quantizers import levels as lv
from dqnn.quantizers.bits import FULL_PRECISION, check_bits
from dqnn.variables import QUANT_STATS

PARAMETERISATIONS = ('basis', 'free', 'uniform')
WEIGHTINGS = ('channel', 'rms', 'pooled')
UPDATES = ('gradient', 'closed_form')
# The name of the one stored value behind each parameterisation's levels.
PARAMETER_NAMES = {'basis': 'basis', 'free': 'levels', 'uniform': 'clip'}
# Relative floor of the channel weighting: `DQActivation.eps`'s default.
EPS = 1e-3


def _weighted_sums(x, levels, weighting, eps):
  """`(sum_c w_c count_cl / M, sum_c w_c residual_cl / M)` from one pass over `x`."""
  sums = lv.channel_level_sums(x, levels, energy=weighting != 'pooled')
  per_channel = x.size // x.shape[-1]
  if weighting == 'pooled':
    weights = jnp.ones_like(sums.count[:, 0])
  else:
    energy = sums.energy / per_channel
    scale = energy if weighting == 'channel' else jnp.sqrt(energy)
    # eps is relative to the mean scale, so the weighting does not depend on the input's scale.
    weights = 1.0 / (scale + eps * jnp.mean(scale) + 1e-30)
  # A product and a sum over channels, not a matmul: a matmul's default precision is below
  # float32 on some accelerators.
  weights = (weights / per_channel)[:, None]
  return jnp.sum(weights * sums.count, axis=0), jnp.sum(weights * sums.residual, axis=0)


def weighted_level_sums(x: jax.Array, levels: jax.Array, weighting: str, eps: float):
  """Per level `l`: `mass_l = sum_{x->l} w_c / M` and `moment_l = sum_{x->l} w_c x / M`.

  `M` is the number of elements per channel. Both the gradient of `E` and its closed-form
  minimiser are functions of these two sums. One pass over `x`, in any float dtype.
  """
  mass, residual = _weighted_sums(x, levels, weighting, eps)
  # moment_l = sum w_c (x - l) / M + l mass_l: summing residuals keeps the precision of the
  # small differences instead of cancelling two large sums.
  return mass, residual + levels * mass


def per_channel_relative_error(x: jax.Array, q: jax.Array) -> jax.Array:
  """`mean (x_c - q_c)^2 / mean x_c^2` for every channel (last axis)."""
  x = x.reshape(-1, x.shape[-1]).astype(jnp.float32)
  q = q.reshape(-1, q.shape[-1]).astype(jnp.float32)
  return jnp.mean((x - q) ** 2, axis=0) / jnp.maximum(jnp.mean(x ** 2, axis=0), 1e-30)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def quantize(x: jax.Array, levels: jax.Array, weighting: str, eps: float,
             task_grad_weight: float) -> jax.Array:
  """Nearest of the sorted `levels` (values past the ends clip to them), in `x`'s dtype."""
  return lv.nearest_value_1d(x, levels)


def _quantize_fwd(x, levels, weighting, eps, task_grad_weight):
  # x itself is the residual, in its own dtype: no upcast copy is written.
  return quantize(x, levels, weighting, eps, task_grad_weight), (x, levels)


def _quantize_bwd(weighting, eps, task_grad_weight, residuals, g):
  x, levels = residuals
  # dE/dl = -2 sum_c w_c / M sum_{x->l} (x - l): the per-channel residual sums (and the channel
  # energies beside them) in one pass over x.
  _, residual = _weighted_sums(x, levels, weighting, eps)
  grad_levels = -2.0 * residual
  if task_grad_weight:
    nearest = lv.nearest_level_1d(x, levels).reshape(-1, 1)
    task = lv.sum_by_level(g.reshape(-1, 1).astype(levels.dtype), nearest, levels.shape[0])[0]
    grad_levels = grad_levels + task_grad_weight * task
  # x: clipped straight-through. levels: the gradient of the weighted error E (not of the task
  # loss), so the levels minimise the per-channel weighted error.
  xf = x.astype(levels.dtype)
  grad_x = jnp.where((xf >= levels[0]) & (xf <= levels[-1]), g, 0).astype(g.dtype)
  return grad_x, grad_levels


quantize.defvjp(_quantize_fwd, _quantize_bwd)


def binary_codes(bits: int, signed: bool = False) -> jax.Array:
  """All `e in {0,1}^bits` (or `{-1,1}^bits` when signed) as rows, `(2**bits, bits)`."""
  codes = jnp.array(list(itertools.product((0.0, 1.0), repeat=bits)))[:, ::-1]
  return 2 * codes - 1 if signed else codes


def unit_grid(num_levels: int, signed: bool) -> jax.Array:
  """`L` uniform points on [0, 1], or on [-1, 1] when signed."""
  grid = jnp.arange(num_levels) / (num_levels - 1)
  return 2 * grid - 1 if signed else grid


def initial_top_level(x: jax.Array, num_levels: int) -> jax.Array:
  """LSQ's initial range, `2 sqrt(L-1) mean|x|`, shared by every activation quantizer.

  When initialised with an all-zero dummy batch, `mean|x|` falls back to that of a ReLU'd unit
  Gaussian (0.4).
  """
  mean_abs = jnp.mean(jnp.abs(x.astype(jnp.float32)))
  mean_abs = jnp.where(mean_abs > 0, mean_abs, 0.4)
  return 2.0 * jnp.sqrt(num_levels - 1.0) * mean_abs


def levels_from(parameterisation: str, value: jax.Array, bits: int, signed: bool) -> jax.Array:
  """The sorted `(L,)` level table of a parameter value."""
  if parameterisation == 'basis':
    return jnp.sort(binary_codes(bits, signed) @ value)
  if parameterisation == 'free':
    return jnp.sort(value)
  return value * unit_grid(2 ** bits, signed)


def closed_form(parameterisation: str, mass: jax.Array, moment: jax.Array, levels: jax.Array,
                current: jax.Array, bits: int, signed: bool) -> jax.Array:
  """The parameter value minimising `E` with every element's level held fixed."""
  if parameterisation == 'free':
    return lv.ratio_or(moment, mass, levels)
  if parameterisation == 'uniform':
    grid = unit_grid(2 ** bits, signed)
    return lv.ratio_or(jnp.sum(moment * grid), jnp.sum(mass * grid ** 2), current)
  # Basis: weighted least squares over the codes of the levels in sorted order.
  codes = binary_codes(bits, signed)
  codes = codes[jnp.argsort(codes @ current)]
  gram = codes.T @ (mass[:, None] * codes)
  # Solved as a step from the current basis with a small ridge: when the occupied levels do not
  # determine every basis vector (e.g. a batch whose values all fall on two levels), those keep
  # their value instead of the solve returning NaN.
  ridge = 1e-6 * jnp.trace(gram) / bits + 1e-12
  step = jnp.linalg.solve(gram + ridge * jnp.eye(bits), codes.T @ moment - gram @ current)
  return current + step


def fit_levels(x: jax.Array, parameterisation: str, value: jax.Array, bits: int, signed: bool,
               weighting: str, iterations: int, eps: float = EPS) -> jax.Array:
  """Sorted levels refit `iterations` times in closed form on `x` under `weighting`, from the
  parameter `value` (each refit is one weighted Lloyd step)."""
  for _ in range(iterations):
    levels = levels_from(parameterisation, value, bits, signed)
    mass, moment = weighted_level_sums(x, levels, weighting, eps)
    value = closed_form(parameterisation, mass, moment, levels, value, bits, signed)
  return levels_from(parameterisation, value, bits, signed)


class DQActivation(nn.Module):
  """Quantizes activations (channels last; non-negative unless `signed`) to learned levels."""
  bits: int
  signed: bool = False
  weighting: str = 'channel'
  parameterisation: str = 'basis'
  update: str = 'closed_form'
  task_grad_weight: float = 0.0
  momentum: float = 0.9
  eps: float = EPS
  # As BatchNorm's: True keeps the stored closed-form levels even when quant_stats is mutable.
  use_running_average: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    check_bits(self.bits, 'a_bits')
    _check_choice('weighting', self.weighting, WEIGHTINGS)
    _check_choice('parameterisation', self.parameterisation, PARAMETERISATIONS)
    _check_choice('update', self.update, UPDATES)
    if self.bits == FULL_PRECISION:
      return x
    name = PARAMETER_NAMES[self.parameterisation]
    init = functools.partial(self._initial_value, x)
    if self.update == 'gradient':
      value = self.param(name, lambda _: init())
    else:
      value = self.variable(QUANT_STATS, name, init).value
    levels = levels_from(self.parameterisation, value, self.bits, self.signed)
    if (self.update == 'closed_form' and not self.use_running_average
        and self.is_mutable_collection(QUANT_STATS) and not self.is_initializing()):
      # x in its own dtype: the sums accumulate in float32 without an upcast copy of x.
      mass, moment = weighted_level_sums(jax.lax.stop_gradient(x), levels, self.weighting,
                                         self.eps)
      fitted = closed_form(self.parameterisation, mass, moment, levels, value, self.bits,
                           self.signed)
      self.put_variable(QUANT_STATS, name, self.momentum * value + (1 - self.momentum) * fitted)
    return quantize(x, _varying_like(levels, x), self.weighting, self.eps, self.task_grad_weight)

  def level_parameter(self, variables: dict) -> tuple[str, jax.Array]:
    """`(parameterisation, stored value)` of trained `variables` (this quantizer's subtree of
    each collection): `params` when trained by gradient, else `quant_stats`."""
    name = PARAMETER_NAMES[self.parameterisation]
    params, stats = variables.get('params', {}), variables.get(QUANT_STATS, {})
    return self.parameterisation, params.get(name, stats.get(name))

  def nominal_levels(self, variables: dict) -> tuple[jax.Array, bool]:
    """The sorted levels of trained `variables`; midpoint thresholds reproduce DQ exactly."""
    parameterisation, value = self.level_parameter(variables)
    return levels_from(parameterisation, value, self.bits, self.signed), True

  def _initial_value(self, x):
    """Uniform levels up to `initial_top_level` (from its negative when signed)."""
    num_levels = 2 ** self.bits
    top = initial_top_level(x, num_levels)
    if self.parameterisation == 'basis':
      # Signed codes span twice the range of {0,1} codes with the same basis.
      return top * 2.0 ** jnp.arange(self.bits) / (num_levels - 1) / (2 if self.signed else 1)
    if self.parameterisation == 'free':
      return top * unit_grid(num_levels, self.signed)
    return top


def _varying_like(levels: jax.Array, x: jax.Array) -> jax.Array:
  """`levels` typed as varying over the `shard_map` axes `x` varies over (no-op elsewhere):
  `quantize`'s level gradient is computed from `x`, and a custom_vjp must return it with its
  input's type; JAX then sums it over those axes, as for any replicated parameter."""
  missing = jax.typeof(x).manual_axis_type.varying - jax.typeof(levels).manual_axis_type.varying
  return jax.lax.pcast(levels, tuple(sorted(missing)), to='varying') if missing else levels


def _check_choice(what, value, choices):
  if value not in choices:
    raise ValueError(f'{what} must be one of {", ".join(choices)}; got {value!r}.')
