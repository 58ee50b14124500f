"""Weight and activation quantizers, by name.

Weight quantizers are modules `Q(bits=..., kernel_init=..., **options)(shape) -> kernel`;
activation quantizers are modules `Q(bits=..., **options)(x) -> x_q`. Add your own with
`register_weight_quantizer` / `register_act_quantizer` (`registry.py`); a weight quantizer
whose parameters need more than gradient descent declares `WeightCapabilities`, as DQ does.
"""
from dqnn.quantizers.bits import FULL_PRECISION, SUPPORTED_BITS, check_bits
from dqnn.quantizers.dorefa import DoReFaActivation, DoReFaWeight
from dqnn.quantizers import dq_weight, dq_weight_update
from dqnn.quantizers.dq_activation import DQActivation, PARAMETER_NAMES
from dqnn.quantizers.dq_weight import DQWeight
from dqnn.quantizers.latent_levels import LatentLevelsWeight
from dqnn.quantizers.lqnets import LQNetsWeight
from dqnn.quantizers.lsq import LSQActivation, LSQWeight
from dqnn.quantizers.pact import PACTActivation
from dqnn.quantizers.registry import (ACTIVATION_QUANTIZERS, WEIGHT_QUANTIZERS,
                                      WeightCapabilities, capability, register_act_quantizer,
                                      register_param_groups, register_weight_quantizer,
                                      validate_params)
from dqnn.quantizers import registry as _registry

# DQ: no latent weights; its own update moves the index and levels (dq_weight_update).
register_weight_quantizer('dq', DQWeight, param_groups=[
    {dq_weight.INDEX: 'weights', dq_weight.LEVELS: 'levels'},
    {dq_weight.INDEX: 'weights', dq_weight.HALF_LEVELS: 'levels'}],
    capabilities=WeightCapabilities(
        index=dq_weight.INDEX, weight=dq_weight.quantized_weight,
        update=dq_weight_update.direct_step, project=dq_weight_update.project,
        validate=dq_weight.validate, outside_domain=dq_weight_update.outside_domain,
        fit=dq_weight.fit, level_counts=dq_weight_update.level_counts,
        foreign_gradient=dq_weight_update.has_foreign_gradient,
        stacked_axes=dq_weight_update.stacked_axes))
# LQ-Nets and DoReFa weights have one latent `kernel`: a weight, as any float kernel.
register_weight_quantizer('lqnets', LQNetsWeight)
register_weight_quantizer('lsq', LSQWeight,
                          param_groups=[{'kernel': 'weights', 'step': 'quantizer'}])
register_weight_quantizer('dorefa', DoReFaWeight)
# DQ's level tables with a latent float kernel: the control for DQ's direct weight update.
register_weight_quantizer('latent_levels', LatentLevelsWeight,
                          param_groups=[{'kernel': 'weights', dq_weight.LEVELS: 'levels'}])

# DQActivation with update='gradient': one parameter, named by its parameterisation.
register_act_quantizer('dq', DQActivation,
                       param_groups=[{name: 'quantizer'} for name in PARAMETER_NAMES.values()])
# LQ-Nets: pooled error, bit-op basis, closed-form refit with a moving average.
register_act_quantizer('lqnets', DQActivation, presets={
    'weighting': 'pooled', 'parameterisation': 'basis', 'update': 'closed_form'})
register_act_quantizer('lsq', LSQActivation, param_groups=[{'step': 'quantizer'}])
register_act_quantizer('dorefa', DoReFaActivation)
register_act_quantizer('pact', PACTActivation, param_groups=[{'clip': 'quantizer'}])


def weight_quantizer(method: str, bits: int, kernel_init, options=None, **module_kwargs):
  """The weight quantizer module `method` for `bits` (1, 2, 3, 4 or 8)."""
  return _registry.build('weight', method, options, bits=check_bits(bits, 'w_bits'),
                         kernel_init=kernel_init, **module_kwargs)


def activation_quantizer(method: str, bits: int, options=None, **module_kwargs):
  """The activation quantizer module `method` for `bits` (1, 2, 3, 4 or 8)."""
  return _registry.build('activation', method, options, bits=check_bits(bits, 'a_bits'),
                         **module_kwargs)
