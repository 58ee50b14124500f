"""Which bits and quantizers each conv/dense layer of a model gets: `QuantPolicy`.

Global `w_bits`/`a_bits` and quantizers apply to every body layer. The first conv and the last
dense follow `first_layer`/`last_layer` ('float' or '8bit'). `overrides` then adjust single
layers, keyed by flax module path ('stage2/block0/conv1') or an fnmatch glob ('stage4/*/conv?');
they apply in order, so a later override wins for the fields it sets (from a config: globs first,
then exact paths; see `QuantPolicy.from_config`).
"""
import dataclasses
import fnmatch
import functools
from typing import Any, Mapping

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from dqnn import tracing
from dqnn.layers import QuantConv, QuantDense
from dqnn.quantizers import FULL_PRECISION, check_bits
from dqnn.variables import path_name

EDGE_POLICIES = ('float', '8bit')
ROLES = ('first', 'body', 'last')
OVERRIDABLE = ('w_bits', 'a_bits', 'weight_quantizer', 'act_quantizer', 'weight_options',
               'act_options')


def _frozen(options: Mapping[str, Any] | None) -> flax.core.FrozenDict | None:
  # Layer fields must be hashable, so options are stored frozen.
  return None if options is None else flax.core.freeze(dict(options))


@dataclasses.dataclass(frozen=True)
class QuantPolicy:
  """Bits and quantizers per layer; hashable, so it can be a field of a linen module."""
  w_bits: int = FULL_PRECISION
  a_bits: int = FULL_PRECISION
  weight_quantizer: str = 'dq'
  act_quantizer: str = 'dq'
  weight_options: Mapping[str, Any] | None = None
  act_options: Mapping[str, Any] | None = None
  first_layer: str = 'float'
  last_layer: str = 'float'
  # ((path or glob, {field: value}), ...), applied in order.
  overrides: tuple[tuple[str, Mapping[str, Any]], ...] = ()

  def __post_init__(self):
    check_bits(self.w_bits, 'w_bits')
    check_bits(self.a_bits, 'a_bits')
    for field in ('first_layer', 'last_layer'):
      if getattr(self, field) not in EDGE_POLICIES:
        raise ValueError(f'{field} must be one of {", ".join(EDGE_POLICIES)}; '
                         f'got {getattr(self, field)!r}.')
    overrides = tuple((pattern, self._checked_override(pattern, fields))
                      for pattern, fields in self.overrides)
    object.__setattr__(self, 'overrides', overrides)
    object.__setattr__(self, 'weight_options', _frozen(self.weight_options))
    object.__setattr__(self, 'act_options', _frozen(self.act_options))

  @staticmethod
  def _checked_override(pattern: str, fields: Mapping[str, Any]) -> flax.core.FrozenDict:
    unknown = set(fields) - set(OVERRIDABLE)
    if unknown:
      raise ValueError(f'Override {pattern!r} sets {", ".join(sorted(unknown))}; an override '
                       f'can set only {", ".join(OVERRIDABLE)}.')
    for field in ('w_bits', 'a_bits'):
      if field in fields:
        check_bits(fields[field], f'{field} of override {pattern!r}')
    return flax.core.freeze({key: _frozen(value) if key.endswith('_options') else value
                             for key, value in fields.items()})

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict) -> 'QuantPolicy':
    """From a config of primitives and dicts; `overrides` is a dict {path or glob: fields}.

    A ConfigDict keeps its keys sorted, not in the order written, so the order is defined
    here: globs first, then exact paths (an exact path wins over any glob), each in key order.
    """
    fields = config.to_dict()
    unknown = set(fields) - {field.name for field in dataclasses.fields(cls)}
    if unknown:
      raise ValueError(f'Unknown quantization policy fields: {", ".join(sorted(unknown))}.')
    fields['overrides'] = tuple(sorted(
        fields.get('overrides', {}).items(),
        key=lambda item: (not any(char in item[0] for char in '*?['), item[0])))
    return cls(**fields)

  def layer_kwargs(self, path: str, role: str = 'body') -> dict[str, Any]:
    """The QuantConv/QuantDense kwargs for the layer at `path` playing `role`."""
    if role not in ROLES:
      raise ValueError(f'role must be one of {", ".join(ROLES)}; got {role!r}.')
    kwargs = dict(w_bits=self.w_bits, a_bits=self.a_bits,
                  weight_quantizer=self.weight_quantizer, act_quantizer=self.act_quantizer,
                  weight_options=self.weight_options, act_options=self.act_options)
    if role != 'body':
      edge = self.first_layer if role == 'first' else self.last_layer
      kwargs.update(w_bits=FULL_PRECISION, a_bits=FULL_PRECISION)
      if edge == '8bit':
        # The first layer's input, the image, already is 8-bit pixels: only its kernel is
        # quantized. The last layer quantizes both.
        kwargs.update(w_bits=8, a_bits=8 if role == 'last' else FULL_PRECISION)
    for pattern, fields in self.overrides:
      if fnmatch.fnmatchcase(path, pattern):
        kwargs.update(fields)
    return kwargs

  def check_overrides(self, layer_paths: list[str]) -> None:
    """Raises ValueError if an override matches none of a model's `layer_paths`."""
    unmatched = [pattern for pattern, _ in self.overrides
                 if not fnmatch.filter(layer_paths, pattern)]
    if unmatched:
      raise ValueError(f'Quantization overrides {", ".join(map(repr, unmatched))} match no layer; '
                       f'the layers are: {", ".join(layer_paths)}.')


def layer_paths(model: nn.Module, input_shape: tuple[int, ...]) -> list[str]:
  """Module paths of every QuantConv/QuantDense in `model`, in call order; traced, not run."""
  paths = []

  def record(module, x, run):
    path = path_name(module.path)
    if path not in paths:
      paths.append(path)
    return run()

  with tracing.intercept_layers((QuantConv, QuantDense), record):
    jax.eval_shape(functools.partial(model.init, train=False), jax.random.PRNGKey(0),
                   jnp.zeros(input_shape, jnp.float32))
  return paths
