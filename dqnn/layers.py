"""Drop-in quantized Flax layers: `QuantConv`, `QuantDense` and `QuantizeActivation`.

`QuantConv`/`QuantDense` take every argument of `nn.Conv`/`nn.Dense` plus `w_bits`, `a_bits`,
the quantizer names and their options. The input is quantized to `a_bits` (the output of the
previous BN+ReLU), the kernel to `w_bits`; 32 bits is exactly the float layer, with the same
parameter names. Trainable quantizer parameters live in `params` under `weight_quantizer` /
`act_quantizer`; statistics that are not trained by gradient (closed-form activation levels,
LQ-Nets bases) live in the `quant_stats` collection, which is state like BatchNorm's
`batch_stats`: keep it from `init`, pass it to `apply`, and make it mutable when training.

Training vs evaluation, as BatchNorm's `use_running_average`: `use_running_average=True`
uses the stored statistics; `False` refits them, and `quant_stats` must then be mutable. Left
`None`, a layer trains when `quant_stats` or `batch_stats` is mutable — so applying with
`mutable=['batch_stats']` alone is an error, not a silent freeze of the quantizers; so is
differentiating the kernel of a layer applied with nothing mutable (a model without BatchNorm,
or `nnx.bridge.ToNNX` called without `mutable=['quant_stats']`).

DQ's activation quantizer weights each channel's error by its energy (`weighting='channel'`).
Where no BatchNorm precedes the layer, or at `a_bits=1`, pass
`act_options={'weighting': 'pooled'}`: it measured 0.9-1.8 points ahead there (docs/method.md §7).

Set `a_signed` for a layer whose input can be negative (it is not the output of a ReLU). An
unsigned quantizer clips negative inputs to its lowest level; when more than
`NEGATIVE_INPUT_WARNING` of a training batch is negative, the layer warns once, naming itself
and `a_signed`. Likewise a training layer whose weight quantizer's parameters have left their
domain (DQ's, moved by an optimizer without DQ's direct update) warns once, naming
`dqnn.optim.wrap_optimizer`. Both are checked on the device; the host is called only when there
is something to report.

Data parallel with `pmap`/`shard_map` (per-device batches): average the refitted statistics
as BatchNorm's, `sync_quant_stats(new_state['quant_stats'], axis_name)`, next to
`lax.pmean(batch_stats, axis_name)`. Under `jax.jit` with a sharded batch there is nothing to do.
`check_replicated(state.quant_stats)` (on the host, e.g. before saving) raises if the devices'
copies differ, naming `sync_quant_stats`.
"""
import dataclasses
import functools
from typing import Any, Mapping
import warnings

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from dqnn import quantizers
from dqnn.quantizers import FULL_PRECISION, capability, check_bits
from dqnn.quantizers.dq_activation import per_channel_relative_error
from dqnn.variables import (ACT_QUANTIZER, BATCH_STATS, PARAMS, QUANT_METRICS, QUANT_STATS,
                            QUANTIZER, WEIGHT_QUANTIZER, path_name)

# Apply with mutable=[..., QUANT_METRICS] to collect each layer's mean per-channel relative
# activation quantization error (sown as a tuple under `act_relative_error`).
# The fraction of negative inputs above which an unsigned activation quantizer warns (read when
# a step is traced; None turns the check off).
NEGATIVE_INPUT_WARNING = 0.1
_TRAIN_COLLECTIONS = (QUANT_STATS, BATCH_STATS)


class QuantStateError(ValueError):
  """The `quant_stats` collection is missing, or not mutable while the quantizers train."""


def sync_quant_stats(quant_stats: Any, axis_name: str) -> Any:
  """The mean of each device's refitted `quant_stats` over `axis_name` (pmap / shard_map).

  Closed-form activation levels and LQ-Nets bases are refitted on each device's batch; average
  them as BatchNorm's statistics (`lax.pmean(batch_stats, axis_name)`), or each device keeps
  its own. Not needed under `jax.jit` with a sharded batch, which already sees the whole batch.
  """
  return jax.tree.map(lambda x: jax.lax.pmean(x, axis_name), quant_stats)


def _device_copies(leaf: Any) -> list[list[np.ndarray]]:
  """Groups of per-device values that must be equal: under `pmap`, every device's entry of the
  leading axis (one per device, as `flax.jax_utils.replicate` lays state out); otherwise the
  shards that hold the same slice of a replicated `jax.Array`."""
  shards = leaf.addressable_shards if isinstance(leaf, jax.Array) else []
  if len(shards) < 2:
    return []
  if leaf.ndim and leaf.shape[0] == len(shards) and all(
      shard.data.shape == (1, *leaf.shape[1:]) for shard in shards):
    return [[np.asarray(shard.data)[0] for shard in shards]]
  groups: dict[tuple, list[np.ndarray]] = {}
  for shard in shards:
    where = tuple((part.start, part.stop, part.step) for part in shard.index)
    groups.setdefault(where, []).append(np.asarray(shard.data))
  return list(groups.values())


def check_replicated(quant_stats: Any) -> None:
  """Raises `QuantStateError` if the devices' copies of `quant_stats` differ.

  Under `pmap` (or `shard_map` without its replication check) each device refits the
  statistics on its own batch; unless the step averages them with `sync_quant_stats`, the
  copies of what should be one replicated state diverge, and a checkpoint of it keeps a mix.
  Call it on the training state's `quant_stats` (e.g. before saving); it compares the copies
  on the host, so call it every so many steps, not inside the step.
  """
  for path, leaf in jax.tree_util.tree_flatten_with_path(quant_stats)[0]:
    for copies in _device_copies(leaf):
      if not all(np.allclose(copy, copies[0], rtol=1e-5, atol=1e-6, equal_nan=True)
                 for copy in copies):
        difference = max(float(np.nanmax(np.abs(copy - copies[0]), initial=0.0))
                         for copy in copies)
        raise QuantStateError(
            f'{QUANT_STATS}{jax.tree_util.keystr(path)} differs between devices (largest '
            f'difference {difference:.3g} between its {len(copies)} copies): each device kept '
            f'the statistics refitted on its own batch. Average them in the pmap / shard_map '
            f'step where batch_stats are averaged: '
            f"quant_stats=dqnn.layers.sync_quant_stats(new['{QUANT_STATS}'], axis_name).")


_warned: set[tuple[str, str]] = set()


def _warn_once(path: str, kind: str, message: str) -> None:
  if (path, kind) not in _warned:
    _warned.add((path, kind))
    warnings.warn(f'{path}: {message}', stacklevel=2)


def _report(path: str, negative_fraction, outside_domain) -> None:
  if NEGATIVE_INPUT_WARNING is not None and negative_fraction > NEGATIVE_INPUT_WARNING:
    _warn_once(path, 'negative', (
        f'{float(negative_fraction):.0%} of the inputs of this unsigned activation quantizer are '
        f'negative and are clipped to its lowest level. If this layer reads inputs that can be '
        f'negative (normalised pixels at the first layer, a linear bottleneck, a residual sum), '
        f'set a_signed=True; for a first layer, consider keeping it float.'))
  if outside_domain:
    _warn_once(path, 'domain', (
        'its weight quantizer\'s parameters left their domain (DQ: levels not strictly '
        'increasing, or an index outside [-1/2, L-1/2]): they were moved by an optimizer '
        'without the quantizer\'s own update (DQ\'s direct update). Build the optimizer with dqnn.optim.wrap_optimizer(your_tx) (or '
        'create_optimizer) and repair the parameters once with '
        'dqnn.optim.project_dq_params(params).'))


def _check_while_training(module: nn.Module, unsigned_input: jax.Array | None,
                          weight_params: Mapping[str, jax.Array] | None) -> None:
  """Warns once per layer, while training, when more than `NEGATIVE_INPUT_WARNING` of an
  unsigned quantizer's input is negative, or when the weight quantizer's parameters left their
  domain (its `outside_domain` capability, e.g. DQ's). Both are reductions on the device; the
  host is called only when there is something to report."""
  if not _training(module) or module.is_initializing():
    return
  if NEGATIVE_INPUT_WARNING is None:
    unsigned_input = None
  outside_domain = capability(weight_params, 'outside_domain')
  if unsigned_input is None and outside_domain is None:
    return
  negative, too_negative = jnp.zeros((), jnp.float32), jnp.zeros((), bool)
  if unsigned_input is not None:
    negative = jnp.mean(jax.lax.stop_gradient(unsigned_input) < 0)
    too_negative = negative > NEGATIVE_INPUT_WARNING
  outside = (outside_domain(weight_params) if outside_domain is not None
             else jnp.zeros((), bool))
  jax.lax.cond(too_negative | outside,
               lambda n, o: jax.debug.callback(_report, _layer_name(module), n, o),
               lambda n, o: None, negative, outside)


def _accepts(registry: Mapping[str, Any], method: str, field: str) -> bool:
  factory = registry.get(method)
  module_class = getattr(factory, 'func', factory)  # `functools.partial` presets, e.g. lqnets
  return dataclasses.is_dataclass(module_class) and field in {
      f.name for f in dataclasses.fields(module_class)}


def _training(module: nn.Module) -> bool:
  """Whether a layer's stateful quantizers refit (see the module docstring)."""
  if module.use_running_average is not None:
    return not module.use_running_average
  return any(module.is_mutable_collection(c) for c in _TRAIN_COLLECTIONS)


def _layer_name(module: nn.Module) -> str:
  return path_name(module.path) or module.name or type(module).__name__


def _run_quantizer(module: nn.Module, registry: Mapping[str, Any], method: str, run):
  """`run(extra_kwargs)` builds and applies a quantizer; a missing `quant_stats` becomes one
  clear error. Stateful quantizers get the layer's train/eval flag."""
  extra = ({'use_running_average': not _training(module)}
           if _accepts(registry, method, 'use_running_average') else {})
  try:
    return run(extra)
  except flax.errors.ScopeCollectionNotFound as error:
    if QUANT_STATS not in str(error):
      raise
    raise QuantStateError(
        f'{_layer_name(module)} keeps its quantizer statistics in the {QUANT_STATS!r} '
        f'collection, which was not passed to apply. Keep it from init next to batch_stats (a '
        f"`{QUANT_STATS}` field in your TrainState), pass it in the variables ({{'params': ..., "
        f"'batch_stats': ..., '{QUANT_STATS}': ...}}) and, when training, apply with "
        f"mutable=['batch_stats', '{QUANT_STATS}'].") from None


def _check_stats_mutable(module: nn.Module) -> None:
  """A training layer with quantizer statistics needs `quant_stats` mutable."""
  if (_training(module) and not module.is_initializing()
      and not module.is_mutable_collection(QUANT_STATS) and module.variables.get(QUANT_STATS)):
    raise QuantStateError(
        f'{_layer_name(module)} is training (use_running_average={module.use_running_average}; '
        f'left None, a mutable batch_stats means training) but {QUANT_STATS!r} is not mutable, '
        f"so its quantizer statistics would silently stay frozen: apply with mutable=["
        f"'batch_stats', '{QUANT_STATS}'] and keep the returned {QUANT_STATS} (e.g. in your "
        f'TrainState), or pass use_running_average=True to evaluate.')


def _differentiated_while_evaluating(layer: str) -> QuantStateError:
  return QuantStateError(
      f'{layer} is being differentiated (training) but was applied with nothing mutable and '
      f'use_running_average=None, which means evaluation: its quantizer statistics '
      f'({QUANT_STATS!r}) would silently stay frozen. Linen: apply with mutable=['
      f"'batch_stats', '{QUANT_STATS}'] (or build the layer with use_running_average=not "
      f'train). NNX through flax.nnx.bridge.ToNNX: call the layer with mutable='
      f"['{QUANT_STATS}'] while training, e.g. self.conv(x, mutable=False if "
      f"self.use_running_average else ['{QUANT_STATS}']). To train with frozen statistics on "
      f'purpose, build the layer with use_running_average=True.')


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _evaluation_kernel(kernel: jax.Array, layer: str) -> jax.Array:
  """`kernel`, whose gradient is a `QuantStateError`: the layer inferred evaluation."""
  return kernel


def _evaluation_kernel_fwd(kernel, layer):
  return kernel, None


def _evaluation_kernel_bwd(layer, _, cotangent):
  # Runs when the backward pass is traced (or run eagerly), so the error is raised at once.
  raise _differentiated_while_evaluating(layer)


_evaluation_kernel.defvjp(_evaluation_kernel_fwd, _evaluation_kernel_bwd)


def _infers_evaluation(module: nn.Module) -> bool:
  """Whether a layer with quantizer statistics evaluates only because nothing is mutable.

  Then a gradient of its kernel means it is trained with its statistics silently frozen (e.g.
  `nnx.bridge.ToNNX` called without `mutable`, whose linen layer sees nothing mutable).
  """
  return (module.use_running_average is None and not _training(module)
          and not module.is_initializing() and bool(module.variables.get(QUANT_STATS)))


def _quantize_activation(module: nn.Module, x: jax.Array, method: str, bits: int,
                         options: Mapping[str, Any] | None, signed: bool, name: str) -> jax.Array:
  """Builds and applies the activation quantizer `method` as the child `name` of `module`."""
  return _run_quantizer(module, quantizers.ACTIVATION_QUANTIZERS, method, lambda extra: (
      quantizers.activation_quantizer(method, bits, options, signed=signed, name=name,
                                      **extra)(x)))


class _Quantized(nn.Module):
  """Mixin: the quantization fields; quantizes the input, and answers the float layer's request
  for its kernel. Listed before the float layer, whose fields then come first."""
  w_bits: int = FULL_PRECISION
  a_bits: int = FULL_PRECISION
  weight_quantizer: str = 'dq'
  act_quantizer: str = 'dq'
  weight_options: Mapping[str, Any] | None = None
  act_options: Mapping[str, Any] | None = None
  a_signed: bool = False
  use_running_average: bool | None = None

  def _quantized_call(self, inputs: jax.Array) -> jax.Array:
    outputs = super().__call__(self._quantize_input(inputs))
    _check_stats_mutable(self)
    weight_params = self.variables.get(PARAMS, {}).get(WEIGHT_QUANTIZER)
    unsigned = self.a_bits != FULL_PRECISION and not self.a_signed
    _check_while_training(self, inputs if unsigned else None, weight_params)
    return outputs

  def _quantize_input(self, inputs: jax.Array) -> jax.Array:
    check_bits(self.w_bits, 'w_bits')
    if check_bits(self.a_bits, 'a_bits') == FULL_PRECISION:
      return inputs
    quantized = _quantize_activation(self, inputs, self.act_quantizer, self.a_bits,
                                     self.act_options, self.a_signed, ACT_QUANTIZER)
    if self.is_mutable_collection(QUANT_METRICS) and not self.is_initializing():
      self.sow(QUANT_METRICS, 'act_relative_error', jnp.mean(
          per_channel_relative_error(jax.lax.stop_gradient(inputs), jax.lax.stop_gradient(quantized))))
    return quantized

  def param(self, name, init_fn, *init_args, **init_kwargs):
    # nn.Conv / nn.Dense create their kernel through self.param('kernel', ...): a quantized layer
    # hands back the quantizer's kernel instead, so all of the float layer's logic is reused.
    if name != 'kernel':
      return super().param(name, init_fn, *init_args, **init_kwargs)
    if self.w_bits == FULL_PRECISION:
      kernel = super().param(name, init_fn, *init_args, **init_kwargs)
    else:
      shape = tuple(init_args[0])
      kernel = _run_quantizer(self, quantizers.WEIGHT_QUANTIZERS, self.weight_quantizer,
                              lambda extra: quantizers.weight_quantizer(
                                  self.weight_quantizer, self.w_bits, init_fn,
                                  self.weight_options, name=WEIGHT_QUANTIZER, **extra)(shape))
    # The activation quantizer has run by now, so its statistics are in the variables.
    return _evaluation_kernel(kernel, _layer_name(self)) if _infers_evaluation(self) else kernel


class QuantConv(_Quantized, nn.Conv):
  """`nn.Conv` with `w_bits`-bit weights and `a_bits`-bit inputs."""

  @nn.compact
  def __call__(self, inputs: jax.Array) -> jax.Array:
    return self._quantized_call(inputs)


class QuantDense(_Quantized, nn.Dense):
  """`nn.Dense` with `w_bits`-bit weights and `a_bits`-bit inputs."""

  @nn.compact
  def __call__(self, inputs: jax.Array) -> jax.Array:
    return self._quantized_call(inputs)


class QuantizeActivation(nn.Module):
  """A standalone activation quantizer (channels last); 32 bits passes `x` through."""
  bits: int
  quantizer: str = 'dq'
  options: Mapping[str, Any] | None = None
  signed: bool = False
  use_running_average: bool | None = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    if check_bits(self.bits, 'bits') == FULL_PRECISION:
      return x
    quantized = _quantize_activation(self, x, self.quantizer, self.bits, self.options,
                                     self.signed, QUANTIZER)
    _check_stats_mutable(self)
    _check_while_training(self, None if self.signed else x, None)
    return quantized
