"""Quantizers by name: the registries configs select from, typed options, parameter groups.

`register_weight_quantizer` / `register_act_quantizer` add a quantizer class under a name; the
options a config passes it (`weight_options` / `act_options`) are checked against the class's
fields. `param_groups` says which optimizer group (`variables.PARAM_GROUPS`) each parameter the
quantizer creates belongs to: the optimizer recognises a quantizer by that set of names
(`dqnn.optim.groups`), whatever the submodule is called.
"""
import dataclasses
import functools
import types
from typing import Any, Mapping, Sequence

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

# Parameter-name signature of a quantizer module -> (the quantizer, the group of each name).
_param_signatures: dict[frozenset, tuple[type, dict[str, str]]] = {}


def register_weight_quantizer(name: str, cls: type, *, presets: Mapping[str, Any] | None = None,
                              param_groups: Sequence[Mapping[str, str]] = ()) -> None:
  """Makes `cls` the weight quantizer `name`: `cls(bits=..., kernel_init=..., **options)(shape)`
  returns the kernel. `presets`: options fixed for this name. `param_groups`: one mapping
  {parameter name: group} per set of parameters the module can create (a lone `kernel` needs
  none: it is a weight)."""
  _register('weight', name, cls, presets, param_groups)


def register_act_quantizer(name: str, cls: type, *, presets: Mapping[str, Any] | None = None,
                           param_groups: Sequence[Mapping[str, str]] = ()) -> None:
  """Makes `cls` the activation quantizer `name`: `cls(bits=..., signed=..., **options)(x)`
  returns `x` quantized. For export and plots, give it a method `nominal_levels(self, variables)`
  (see `dqnn.quantizers.readout`). `presets` and `param_groups` as for weight quantizers."""
  _register('activation', name, cls, presets, param_groups)


def register_param_groups(cls: type, groups: Mapping[str, str]) -> None:
  """Declares that a module of class `cls` creating exactly the parameters `groups` names is a
  quantizer, and which optimizer group each of them belongs to."""
  _check_groups(cls, groups)
  _param_signatures[frozenset(groups)] = (cls, dict(groups))


def _check_groups(cls, groups):
  unknown = set(groups.values()) - set(PARAM_GROUPS)
  if unknown:
    raise ValueError(f'Unknown parameter groups {sorted(unknown)} for {cls.__name__}; use '
                     f'{", ".join(PARAM_GROUPS)}.')
  signature = frozenset(groups)
  if signature in _param_signatures and _param_signatures[signature][1] != dict(groups):
    raise ValueError(f'Parameters {sorted(signature)} are already registered with other groups '
                     f'by {_param_signatures[signature][0].__name__}.')


def param_signature(names) -> tuple[type, dict[str, str]] | None:
  """`(quantizer class, group of each name)` of a module creating exactly the parameters
  `names`, or None if no quantizer creates that set."""
  return _param_signatures.get(frozenset(names))


def _register(kind, name, cls, presets, param_groups):
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
    _check_groups(cls, groups)
  for groups in param_groups:
    register_param_groups(cls, groups)
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
