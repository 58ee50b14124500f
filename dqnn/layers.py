"""Drop-in quantized Flax layers: `QuantConv`, `QuantDense` and `QuantizeActivation`.

`QuantConv`/`QuantDense` take every argument of `nn.Conv`/`nn.Dense` plus `w_bits`, `a_bits`,
the quantizer names and their options. The input is quantized to `a_bits` (the output of the
previous BN+ReLU), the kernel to `w_bits`; 32 bits is exactly the float layer, with the same
parameter names. Trainable quantizer parameters live in `params` under `weight_quantizer` /
`act_quantizer`; statistics that are not trained by gradient live in `quant_stats` — pass
`mutable=['batch_stats', 'quant_stats']` when training. Set `a_signed` for a layer whose input
can be negative (it is not the output of a ReLU).
"""
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from dqnn import quantizers
from dqnn.quantizers import FULL_PRECISION, check_bits
from dqnn.quantizers.dq_activation import per_channel_relative_error

# Apply with mutable=[..., METRICS] to collect each layer's mean per-channel relative
# activation quantization error (sown as a tuple under `act_relative_error`).
METRICS = 'quant_metrics'


class _Quantized:
  """Mixin: quantizes the input, and answers the float layer's request for its kernel.

  Subclasses declare the fields `w_bits`, `a_bits`, `weight_quantizer`, `act_quantizer`,
  `weight_options` and `act_options` (dataclass fields cannot come from a plain mixin).
  """

  def _quantize_input(self, inputs: jax.Array) -> jax.Array:
    check_bits(self.w_bits, 'w_bits')
    if check_bits(self.a_bits, 'a_bits') == FULL_PRECISION:
      return inputs
    quantized = quantizers.activation_quantizer(
        self.act_quantizer, self.a_bits, self.act_options, signed=self.a_signed,
        name='act_quantizer')(inputs)
    if self.is_mutable_collection(METRICS) and not self.is_initializing():
      self.sow(METRICS, 'act_relative_error', jnp.mean(
          per_channel_relative_error(jax.lax.stop_gradient(inputs), jax.lax.stop_gradient(quantized))))
    return quantized

  def param(self, name, init_fn, *init_args, **init_kwargs):
    # nn.Conv / nn.Dense create their kernel through self.param('kernel', ...): a quantized layer
    # hands back the quantizer's kernel instead, so all of the float layer's logic is reused.
    if name != 'kernel' or self.w_bits == FULL_PRECISION:
      return super().param(name, init_fn, *init_args, **init_kwargs)
    shape = init_args[0]
    return quantizers.weight_quantizer(
        self.weight_quantizer, self.w_bits, init_fn, self.weight_options,
        name='weight_quantizer')(tuple(shape))


class QuantConv(_Quantized, nn.Conv):
  """`nn.Conv` with `w_bits`-bit weights and `a_bits`-bit inputs."""
  w_bits: int = FULL_PRECISION
  a_bits: int = FULL_PRECISION
  weight_quantizer: str = 'dq'
  act_quantizer: str = 'dq'
  weight_options: Mapping[str, Any] | None = None
  act_options: Mapping[str, Any] | None = None
  a_signed: bool = False

  @nn.compact
  def __call__(self, inputs: jax.Array) -> jax.Array:
    return super().__call__(self._quantize_input(inputs))


class QuantDense(_Quantized, nn.Dense):
  """`nn.Dense` with `w_bits`-bit weights and `a_bits`-bit inputs."""
  w_bits: int = FULL_PRECISION
  a_bits: int = FULL_PRECISION
  weight_quantizer: str = 'dq'
  act_quantizer: str = 'dq'
  weight_options: Mapping[str, Any] | None = None
  act_options: Mapping[str, Any] | None = None
  a_signed: bool = False

  @nn.compact
  def __call__(self, inputs: jax.Array) -> jax.Array:
    return super().__call__(self._quantize_input(inputs))


class QuantizeActivation(nn.Module):
  """A standalone activation quantizer (channels last); 32 bits passes `x` through."""
  bits: int
  quantizer: str = 'dq'
  options: Mapping[str, Any] | None = None
  signed: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    if check_bits(self.bits, 'bits') == FULL_PRECISION:
      return x
    return quantizers.activation_quantizer(self.quantizer, self.bits, self.options,
                                           signed=self.signed, name='quantizer')(x)
