"""Any Optax optimizer made DQ-correct (`wrap_optimizer`), and dqnn's own (`create_optimizer`).

`wrap_optimizer(base_tx)` chains
1. a check that DQ gradients are those of the quantized forward pass (an L2 term of the loss
   on the DQ index or levels warns once, naming `dqnn.optim.decay_mask`; off in
   `create_optimizer`), then weight decay on `w_q` for DQ weights (and on float kernels,
   optionally);
2. level-gradient normalisation (each level's summed gradient divided by its number of weights);
3. the optimizers, one per parameter group (`dqnn.optim.groups`): the base optimizer for weights
   (DQ indices included: it turns their gradient into a step in weight units), the levels and
   `other`; a separate one for quantizer parameters. The base optimizer sees each DQ `index` as
   the quantized weight `w_q` it stands for, so whatever it does with parameter values (adamw's
   decay) acts in weight units, never on the index;
4. the quantizers' own update rules (DQ's direct update, which turns the steps into new levels
   and indices; always last).
"""
from typing import Any, Callable

import jax
import optax

from dqnn.optim.direct_update import direct_update
from dqnn.optim import gradients
from dqnn.optim.groups import OTHER, WEIGHTS, parameter_groups
from dqnn.optim.tree import map_quantizers
from dqnn.quantizers import registry

LEVEL_GRADIENTS = ('mean', 'sum')
QUANTIZER_OPTIMIZERS = ('adam', 'sgd')
# The quantizer group's default: create_optimizer's Adam at 0.01x a weight learning rate of 0.1.
DEFAULT_QUANTIZER_LEARNING_RATE = 1e-3


def _in_weight_units(inner: optax.GradientTransformation) -> optax.GradientTransformation:
  """`inner`, shown each quantizer's `index` (DQ's) as the kernel `weight` it stands for."""

  def update_fn(updates, state, params=None):
    if params is not None:
      params = map_quantizers(
          'weight', lambda weight, _, p: {**p, registry.capability(p, 'index'): weight(p)},
          params, params)
    return inner.update(updates, state, params)

  return optax.GradientTransformation(inner.init, update_fn)


def _checking_dq_gradients(inner: optax.GradientTransformation) -> optax.GradientTransformation:
  """`inner`, after warning about gradients the DQ forward pass does not produce (its state
  unchanged, so optimizer states saved before the check still restore)."""

  def update_fn(updates, state, params=None):
    if params is not None:
      gradients.warn_on_foreign_dq_gradients(updates, params)
    return inner.update(updates, state, params)

  return optax.GradientTransformation(inner.init, update_fn)


def _merge_other_into_weights(params):
  return jax.tree.map(lambda group: WEIGHTS if group == OTHER else group,
                      parameter_groups(params))


def wrap_optimizer(
    base_tx: optax.GradientTransformation,
    *,
    weight_decay: float = 0.0,
    decay_float_kernels: bool = True,
    level_gradient: str = 'mean',
    level_tx: optax.GradientTransformation | None = None,
    quantizer_tx: optax.GradientTransformation | None = None,
    other_tx: optax.GradientTransformation | None = None,
    residual: bool = True,
    level_update: str = 'gradient',
    check_dq_gradients: bool = True,
) -> optax.GradientTransformation:
  """Makes any Optax optimizer train DQ (and baseline) quantized layers correctly.

  Args:
    base_tx: the user's optimizer (`optax.sgd`, `optax.adamw`, a chain, with any schedule). It
      trains the weights (float kernels, latent kernels, DQ indices in weight units), `other`
      parameters (unless `other_tx`) and, unless `level_tx`, the DQ levels. Its weight decay, if
      any, should be masked with `dqnn.optim.decay_mask`.
    weight_decay: L2 decay on DQ quantized weights `w_q`, and on float kernels unless
      `decay_float_kernels=False` (for a loss or base optimizer that already decays them).
    level_gradient: 'mean' divides each level's summed gradient by its number of weights (scale-
      free across layer sizes), 'sum' keeps the exact summed gradient.
    level_tx: the DQ levels' optimizer; default: `base_tx` (its own state), which with 'mean'
      moves a level like the average of its weights.
    quantizer_tx: for activation-quantizer parameters, LSQ steps and PACT clips; default
      `optax.adam(1e-3)` (their gradients have no natural scale).
    other_tx: for BatchNorm, biases and other parameters; default: `base_tx`, together with
      the weights (one state, so e.g. a global-norm clip spans both).
    residual, level_update: options of `dqnn.optim.direct_update`.
    check_dq_gradients: warn once per layer whose DQ gradients its quantized forward pass did
      not produce (an L2 term of the loss on the index or levels). About 1% of a step's memory
      traffic (ResNet-18 W2A2, batch 64, XLA cost analysis); `create_optimizer`, for dqnn's own
      loss, which has no such term, leaves it out.

  Put the result last in any chain: the direct update must see the final steps.
  """
  if level_gradient not in LEVEL_GRADIENTS:
    raise ValueError(f'level_gradient must be one of {LEVEL_GRADIENTS}; got {level_gradient!r}.')
  per_group = {
      'weights': base_tx,
      'levels': base_tx if level_tx is None else level_tx,
      'quantizer': (optax.adam(DEFAULT_QUANTIZER_LEARNING_RATE) if quantizer_tx is None
                    else quantizer_tx),
  }
  if other_tx is not None:
    per_group['other'] = other_tx
  labels = parameter_groups if other_tx is not None else _merge_other_into_weights
  decay = gradients.weight_decay(weight_decay, float_kernels=decay_float_kernels)
  return optax.chain(
      _checking_dq_gradients(decay) if check_dq_gradients else decay,
      gradients.normalize_level_gradients() if level_gradient == 'mean' else optax.identity(),
      _in_weight_units(optax.partition(per_group, labels)),
      direct_update(residual=residual, level_update=level_update),
  )


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
  """SGD (momentum) for weights, with the direct update for DQ weights (`wrap_optimizer`).

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
  if quantizer_optimizer not in QUANTIZER_OPTIMIZERS:
    raise ValueError(
        f'quantizer_optimizer must be one of {QUANTIZER_OPTIMIZERS}; got {quantizer_optimizer!r}.')
  sgd = lambda lr: optax.sgd(lr, momentum=momentum or None, nesterov=nesterov)
  quantizer_lr = _scaled(learning_rate, quantizer_lr_scale)
  return wrap_optimizer(
      sgd(learning_rate),
      weight_decay=weight_decay_rate,
      level_gradient=level_gradient,
      level_tx=sgd(_scaled(learning_rate, level_lr_scale)),
      quantizer_tx=optax.adam(quantizer_lr) if quantizer_optimizer == 'adam' else sgd(quantizer_lr),
      other_tx=sgd(learning_rate),
      residual=residual,
      level_update=level_update,
      check_dq_gradients=False,  # dqnn's loss has no term on the parameters themselves.
  )
