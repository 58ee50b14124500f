"""Weight and activation quantizers, by name.

Weight quantizers are modules `Q(bits=..., kernel_init=..., **options)(shape) -> kernel`;
activation quantizers are modules `Q(bits=..., **options)(x) -> x_q`.
"""
import functools

from dqnn.quantizers.bits import FULL_PRECISION, SUPPORTED_BITS, check_bits
from dqnn.quantizers.dorefa import DoReFaActivation, DoReFaWeight
from dqnn.quantizers.dq_activation import DQActivation
from dqnn.quantizers.dq_weight import DQWeight
from dqnn.quantizers.lqnets import LQNetsWeight
from dqnn.quantizers.lsq import LSQActivation, LSQWeight
from dqnn.quantizers.pact import PACTActivation

WEIGHT_QUANTIZERS = {
    'dq': DQWeight,
    'lqnets': LQNetsWeight,
    'lsq': LSQWeight,
    'dorefa': DoReFaWeight,
}
ACTIVATION_QUANTIZERS = {
    'dq': DQActivation,
    # LQ-Nets: pooled error, bit-op basis, closed-form refit with a moving average.
    'lqnets': functools.partial(DQActivation, weighting='pooled', parameterisation='basis',
                                update='closed_form'),
    'lsq': LSQActivation,
    'dorefa': DoReFaActivation,
    'pact': PACTActivation,
}


def _make(registry, kind, method, options, **kwargs):
  if method not in registry:
    raise ValueError(f'Unknown {kind} quantizer {method!r}; choose one of {", ".join(registry)}.')
  try:
    return registry[method](**kwargs, **dict(options or {}))
  except TypeError as error:
    raise ValueError(
        f'Bad options {dict(options or {})} for {kind} quantizer {method!r}: {error}') from None


def weight_quantizer(method: str, bits: int, kernel_init, options=None, **module_kwargs):
  """The weight quantizer module `method` for `bits` (1, 2, 3, 4 or 8)."""
  return _make(WEIGHT_QUANTIZERS, 'weight', method, options, bits=check_bits(bits, 'w_bits'),
               kernel_init=kernel_init, **module_kwargs)


def activation_quantizer(method: str, bits: int, options=None, **module_kwargs):
  """The activation quantizer module `method` for `bits` (1, 2, 3, 4 or 8)."""
  return _make(ACTIVATION_QUANTIZERS, 'activation', method, options,
               bits=check_bits(bits, 'a_bits'), **module_kwargs)
