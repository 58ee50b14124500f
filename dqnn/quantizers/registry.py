"""Quantizers by name: the registries configs select from, typed options, parameter groups.

`register_weight_quantizer` / `register_act_quantizer` add a quantizer class under a name; the
options a config passes it (`weight_options` / `act_options`) are checked against the class's
fields. `param_groups` says which optimizer group (`variables.PARAM_GROUPS`) each parameter the
quantizer creates belongs to: the optimizer recognises a quantizer by that set of names
(`dqnn.optim.groups`), whatever the submodule is called. A weight quantizer whose parameters
need more than gradient descent declares it in `WeightCapabilities`; training, warm start,
checkpoints and export ask `capability(params, ...)` and never know the quantizer by name.
"""
import dataclasses
import functools
import types
from typing import Any, Callable, Mapping, Sequence

import flax.linen as nn

from dqnn.variables import PARAM_GROUPS

# Fields the layers fill in themselves, never options.
_LAYER_FIELDS = {'weight': ('bits', 'kernel_init'), 'activation': ('bits', 'signed')}
# Linen's own fields, and the train/eval flag the layers pass a quantizer that declares it.
_MODULE_FIELDS = ('parent', 'name', 'use_running_average')

_registries: dict[str, dict[str, Any]] = {'weight': {}, 'activation': {}}
# Read-only views: register through the functions below.
WEIGHT_QUANTIZERS = types.MappingProxyType(_registries['weight'])
ACTIVATION_QUANTIZERS = types.MappingProxyType(_registries['activation'])


@dataclasses.dataclass(frozen=True)
class WeightCapabilities:
  """What a weight quantizer's parameters can do beyond gradient descent; each is optional.

  Every function takes one module's parameters `params` ({name: array}); those marked *per
  layer* see one layer at a time (vmapped over `stacked_axes(params)` leading axes of `nn.scan`),
  the others the parameters as stored.

  index: the parameter that stands for the kernel in weight units (with `weight`): the base
    optimizer and weight decay see it as `weight(params)`, `decay_mask` never decays it.
  weight: `params -> kernel`, the kernel the layer computes with (*per layer*).
  update: `(steps, params, *, residual, level_update) -> steps`, the quantizer's own update
    rule, run by `dqnn.optim.wrap_optimizer` after the base optimizer turned gradients into
    `steps` (*per layer*); `residual` and `level_update` are the wrapper's options.
  project: `params -> params` back in their domain (`dqnn.optim.project_dq_params`; *per layer*).
  validate: `(params, where) -> None`, raising one clear ValueError if malformed; run on
    restored checkpoints and before export.
  outside_domain: `params -> bool array`, traced: the layers warn while training when true.
  fit: `(params, float_kernel) -> params` representing that kernel, like `params` (same
    grouping); warm start from a float model (`config.init_from`). Needs `weight`.
  level_counts: `params -> {name: counts}`, how many weights use each entry of the named level
    parameters; their gradients are divided by it (`level_gradient='mean'`; *per layer*).
  foreign_gradient: `(grads, params) -> bool`, whether gradients are not those of the
    quantized forward pass (`wrap_optimizer(check_dq_gradients=True)` warns; *per layer*).
  stacked_axes: `params -> int`, how many leading axes `nn.scan` added (default none).
  """
  index: str | None = None
  weight: Callable | None = None
  update: Callable | None = None
  project: Callable | None = None
  validate: Callable | None = None
  outside_domain: Callable | None = None
  fit: Callable | None = None
  level_counts: Callable | None = None
  foreign_gradient: Callable | None = None
  stacked_axes: Callable = lambda params: 0


_NO_CAPABILITIES = WeightCapabilities()
CAPABILITIES = tuple(f.name for f in dataclasses.fields(WeightCapabilities))

# Parameter-name signature of a quantizer module -> (the quantizer, the group of each name,
# its capabilities).
_param_signatures: dict[frozenset, tuple[type, dict[str, str], WeightCapabilities]] = {}


def register_weight_quantizer(name: str, cls: type, *, presets: Mapping[str, Any] | None = None,
                              param_groups: Sequence[Mapping[str, str]] = (),
                              capabilities: WeightCapabilities | None = None) -> None:
  """Makes `cls` the weight quantizer `name`: `cls(bits=..., kernel_init=..., **options)(shape)`
  returns the kernel. `presets`: options fixed for this name. `param_groups`: one mapping
  {parameter name: group} per set of parameters the module can create (a lone `kernel` needs
  none: it is a weight). `capabilities`: what each of those sets can do beyond gradient
  descent (`WeightCapabilities`)."""
  if capabilities is not None:
    _check_capabilities(cls, capabilities, param_groups)
  _register('weight', name, cls, presets, param_groups, capabilities or _NO_CAPABILITIES)


def register_act_quantizer(name: str, cls: type, *, presets: Mapping[str, Any] | None = None,
                           param_groups: Sequence[Mapping[str, str]] = ()) -> None:
  """Makes `cls` the activation quantizer `name`: `cls(bits=..., signed=..., **options)(x)`
  returns `x` quantized. For export and plots, give it a method `nominal_levels(self, variables)`
  (see `dqnn.quantizers.readout`). `presets` and `param_groups` as for weight quantizers."""
  _register('activation', name, cls, presets, param_groups, _NO_CAPABILITIES)


def register_param_groups(cls: type, groups: Mapping[str, str],
                          capabilities: WeightCapabilities | None = None) -> None:
  """Declares that a module of class `cls` creating exactly the parameters `groups` names is a
  quantizer, which optimizer group each of them belongs to, and what it can do beyond gradient
  descent."""
  capabilities = capabilities or _NO_CAPABILITIES
  _check_groups(cls, groups, capabilities)
  _param_signatures[frozenset(groups)] = (cls, dict(groups), capabilities)


def _check_groups(cls, groups, capabilities):
  unknown = set(groups.values()) - set(PARAM_GROUPS)
  if unknown:
    raise ValueError(f'Unknown parameter groups {sorted(unknown)} for {cls.__name__}; use '
                     f'{", ".join(PARAM_GROUPS)}.')
  signature = frozenset(groups)
  if signature in _param_signatures and _param_signatures[signature][1:] != (dict(groups),
                                                                            capabilities):
    raise ValueError(f'Parameters {sorted(signature)} are already registered with other groups '
                     f'or capabilities by {_param_signatures[signature][0].__name__}.')


def _check_capabilities(cls, capabilities, param_groups):
  if not isinstance(capabilities, WeightCapabilities):
    raise TypeError(f'capabilities of {cls.__name__} must be a WeightCapabilities; got '
                    f'{capabilities!r}.')
  if not param_groups:
    raise ValueError(f'Capabilities of {cls.__name__} need the param_groups they apply to.')
  if (capabilities.index is None) != (capabilities.weight is None):
    raise ValueError(f'{cls.__name__}: the capabilities `index` and `weight` go together (the '
                     f'parameter in weight units and the kernel it stands for).')
  if capabilities.fit is not None and capabilities.weight is None:
    raise ValueError(f'{cls.__name__}: the capability `fit` needs `weight` (the kernel shape '
                     f'it fits).')
  for groups in param_groups:
    if capabilities.index is not None and capabilities.index not in groups:
      raise ValueError(f'{cls.__name__}: index parameter {capabilities.index!r} is not one of '
                       f'its parameters {sorted(groups)}.')


def param_signature(names) -> tuple[type, dict[str, str]] | None:
  """`(quantizer class, group of each name)` of a module creating exactly the parameters
  `names`, or None if no quantizer creates that set."""
  registered = _param_signatures.get(frozenset(names))
  return registered[:2] if registered else None


def capability(params_or_names: Any, name: str) -> Any:
  """The capability `name` (a field of `WeightCapabilities`) of the quantizer whose module has
  exactly these parameters (a mapping of them, or their names), or None: the one test of what a
  quantizer's parameters can do."""
  if name not in CAPABILITIES:
    raise ValueError(f'Unknown capability {name!r}; choose one of {", ".join(CAPABILITIES)}.')
  if not isinstance(params_or_names, (Mapping, set, frozenset, list, tuple)):
    return None
  try:
    registered = _param_signatures.get(frozenset(params_or_names))
  except TypeError:  # Unhashable keys: not a module's parameter names.
    return None
  return getattr(registered[2], name) if registered else None


def validate_params(params: Any, path: str = '') -> None:
  """Raises one clear ValueError if the parameters of any quantizer in `params` (a tree of
  mappings) that declares `validate` are malformed; its message names the path."""
  check = capability(params, 'validate') if isinstance(params, Mapping) else None
  if check is not None:
    check(params, path or '<root>')
  elif isinstance(params, Mapping):
    for key, value in params.items():
      validate_params(value, f'{path}/{key}' if path else key)


def _register(kind, name, cls, presets, param_groups, capabilities):
  if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
    raise TypeError(f'A {kind} quantizer is a flax.linen Module class; got {cls!r}.')
  missing = [f for f in _LAYER_FIELDS[kind] if f not in _fields(cls)]
  if missing:
    raise TypeError(f'{kind.capitalize()} quantizer {cls.__name__} needs the fields '
                    f'{", ".join(missing)}, which the layers pass it.')
  factory = functools.partial(cls, **presets) if presets else cls
  _check_options(kind, name, factory, {})
  registered = _registries[kind].get(name)
  if registered is not None and _signature(registered) != _signature(factory):
    raise ValueError(f'{kind.capitalize()} quantizer {name!r} is already registered as '
                     f'{_describe(registered)}; choose another name.')
  # Everything checked before anything is registered.
  for groups in param_groups:
    _check_groups(cls, groups, capabilities)
  for groups in param_groups:
    register_param_groups(cls, groups, capabilities)
  _registries[kind][name] = factory


def check(kind: str, method: str, options: Mapping[str, Any] | None) -> None:
  """Raises one clear ValueError unless `method` is a registered `kind` ('weight' or
  'activation') quantizer that takes `options`; what configs are validated with."""
  registry = _registries[kind]
  if method not in registry:
    raise ValueError(f'Unknown {kind} quantizer {method!r}; choose one of {", ".join(registry)}.')
  _check_options(kind, method, registry[method], dict(options or {}))


def build(kind: str, method: str, options: Mapping[str, Any] | None, **kwargs) -> nn.Module:
  """The `kind` quantizer registered as `method`, with checked `options`."""
  check(kind, method, options)
  return _registries[kind][method](**kwargs, **dict(options or {}))


def _check_options(kind, method, factory, options):
  """One clear error for options the quantizer does not take or of the wrong type."""
  cls = getattr(factory, 'func', factory)
  fields = _fields(cls)
  taken = set(_LAYER_FIELDS[kind]) | set(_MODULE_FIELDS) | set(getattr(factory, 'keywords', {}))
  allowed = sorted(set(fields) - taken)
  unknown = sorted(set(options) - set(allowed))
  if unknown:
    raise ValueError(f'Unknown options {unknown} for {kind} quantizer {method!r} '
                     f'({cls.__name__}); it takes {", ".join(allowed) or "no options"}.')
  for option, value in options.items():
    expected = fields[option].type
    if not _has_type(value, expected):
      raise ValueError(f'Option {option!r} of {kind} quantizer {method!r} must be '
                       f'{expected.__name__}; got {value!r}.')


def _has_type(value, expected) -> bool:
  """Whether `value` fits a plain `bool`/`int`/`float`/`str` field (others are not checked)."""
  if expected not in (bool, int, float, str):
    return True
  if isinstance(value, bool):
    return expected is bool
  return isinstance(value, (int, float) if expected is float else expected)


def _fields(cls) -> dict[str, dataclasses.Field]:
  return {f.name: f for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else {}


def _signature(factory):
  return getattr(factory, 'func', factory), tuple(sorted(getattr(factory, 'keywords', {}).items()))


def _describe(factory) -> str:
  cls, presets = _signature(factory)
  return cls.__name__ + (f' with {dict(presets)}' if presets else '')
