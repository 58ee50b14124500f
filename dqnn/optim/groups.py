"""Parameter groups and the optimizer that trains a dqnn model.

Groups (`parameter_groups`):
- `weights`: float kernels, latent kernels of the baselines and DQ indices (all in weight units);
- `levels`: DQ weight level tables;
- `quantizer`: activation-quantizer parameters and baseline quantizer parameters (LSQ steps);
- `other`: BatchNorm scales/offsets and biases.
"""
from typing import Any, Callable, Mapping

import optax

from dqnn.optim.direct_update import direct_update
from dqnn.optim.gradients import normalize_level_gradients, weight_decay
from dqnn.quantizers import dq_weight

GROUPS = ('weights', 'levels', 'quantizer', 'other')
LEVEL_GRADIENTS = ('mean', 'sum')
QUANTIZER_OPTIMIZERS = ('adam', 'sgd')


def parameter_groups(params: Any) -> Any:
  """A tree of group names shaped like `params`."""

  def label(tree, inside_quantizer):
    if dq_weight.is_dq_weight(tree):
      return {key: 'weights' if key == dq_weight.INDEX else 'levels' for key in tree}
    if isinstance(tree, Mapping):
      return {key: label(value, inside_quantizer or key in ('act_quantizer', 'weight_quantizer'))
                   if isinstance(value, Mapping) else leaf(key, inside_quantizer)
              for key, value in tree.items()}
    raise TypeError(f'Expected a nested dict of parameters; got {type(tree).__name__}.')

  def leaf(key, inside_quantizer):
    if key == 'kernel':
      return 'weights'
    return 'quantizer' if inside_quantizer else 'other'

  return label(params, False)


def _scaled(learning_rate, scale):
  if callable(learning_rate):
    return lambda step: learning_rate(step) * scale
  return learning_rate * scale


def create_optimizer(
    learning_rate: float | Callable[[Any], Any],
    *,
    momentum: float = 0.9,
    nesterov: bool = False,
    weight_decay_rate: float = 0.0,
    level_lr_scale: float = 1.0,
    level_gradient: str = 'mean',
    quantizer_optimizer: str = 'adam',
    quantizer_lr_scale: float = 0.01,
    residual: bool = True,
    level_update: str = 'gradient',
) -> optax.GradientTransformation:
  """SGD (momentum) for weights, with the direct update for DQ weights.

  Args:
    learning_rate: the weights' learning rate, a float or an optax schedule.
    momentum, nesterov: of the SGD used for weights, levels and `other`.
    weight_decay_rate: L2 decay on float kernels and on DQ quantized weights `w_q`.
    level_lr_scale: the DQ levels' learning rate relative to `learning_rate`.
    level_gradient: 'mean' divides each level's summed gradient by its number of weights
      (default; scale-free across layer sizes) or 'sum' keeps the exact summed gradient.
    quantizer_optimizer: 'adam' (default: the activation levels' error gradient has no natural
      scale) or 'sgd' for activation/baseline quantizer parameters.
    quantizer_lr_scale: their learning rate relative to `learning_rate`.
    residual, level_update: options of `direct_update`.
  """
  if level_gradient not in LEVEL_GRADIENTS:
    raise ValueError(f'level_gradient must be one of {LEVEL_GRADIENTS}; got {level_gradient!r}.')
  if quantizer_optimizer not in QUANTIZER_OPTIMIZERS:
    raise ValueError(
        f'quantizer_optimizer must be one of {QUANTIZER_OPTIMIZERS}; got {quantizer_optimizer!r}.')
  sgd = lambda lr: optax.sgd(lr, momentum=momentum or None, nesterov=nesterov)
  quantizer_lr = _scaled(learning_rate, quantizer_lr_scale)
  per_group = {
      'weights': sgd(learning_rate),
      'levels': sgd(_scaled(learning_rate, level_lr_scale)),
      'quantizer': optax.adam(quantizer_lr) if quantizer_optimizer == 'adam' else sgd(quantizer_lr),
      'other': sgd(learning_rate),
  }
  return optax.chain(
      weight_decay(weight_decay_rate),
      normalize_level_gradients() if level_gradient == 'mean' else optax.identity(),
      optax.partition(per_group, parameter_groups),
      direct_update(residual=residual, level_update=level_update),
  )
