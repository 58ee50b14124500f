"""A run's config: checked before training, kept in the workdir, compared when a run resumes.

`workdir/config.json` is the config the run trains with. Resuming with a config that differs in
a field `SCHEMA` does not mark resumable is refused (`ConfigChangedError`, naming the fields)
unless `allow_config_change` is set; the previous config.json is then kept as `config.<step>.json`.
"""
import dataclasses
import difflib
import json
from typing import Any, Callable, Mapping

from etils import epath
import ml_collections

from dqnn import files
from dqnn.data import datasets
from dqnn.models import MODELS
from dqnn.models.policy import QuantPolicy
from dqnn.optim.direct_update import LEVEL_UPDATES
from dqnn.optim.optimizer import LEVEL_GRADIENTS, QUANTIZER_OPTIMIZERS
from dqnn.quantizers import registry
from dqnn.schedules import SCHEDULES

CONFIG_FILE = 'config.json'
COMPUTE_DTYPES = ('float32', 'bfloat16', 'float16')
ON_CORRUPT_CHECKPOINT = ('fallback', 'stop')
TEACHER_DTYPES = ('float32', 'bfloat16')
# `init_from` values that name no run: a fine-tune recipe's placeholder, and "from scratch".
INIT_FROM_REQUIRED, INIT_FROM_NONE = 'required', 'none'
# Who decodes and crops training JPEGs: grain's threads (dqnn.data.pipeline) or NVIDIA DALI
# (dqnn.data.dali_input, the `dali` extra).
GRAIN, DALI = 'grain', 'dali'
INPUT_BACKENDS = (GRAIN, DALI)


class ConfigError(ValueError):
  """A config field holds a value training cannot use."""


class ConfigChangedError(ValueError):
  """A resumed run's config differs from the one its workdir was trained with."""


_NOT_ADDED = object()  # A field every saved config has.


@dataclasses.dataclass(frozen=True)
class Field:
  """What one config field may hold, and what a change to it means.

  `resumable`: a resumed run may change it (nothing the steps taken so far computed depends on
  it). `shapes_state`: it decides the structure of the saved state, so a checkpoint that does not
  fit this run is explained by differences in these fields.
  """
  rule: str  # The valid values, as the error states them.
  valid: Callable[[Any], bool]
  resumable: bool = False
  shapes_state: bool = False
  choices: tuple[str, ...] = ()  # For a name: the nearest one is suggested.
  # For a field added after runs were saved: what its absence from a saved config.json means
  # (the behaviour before the field existed), so that those runs resume with that value.
  absent_means: Any = _NOT_ADDED


def _is_int(value) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool)


def _int(minimum: int, **kwargs) -> Field:
  rule = 'a positive integer' if minimum == 1 else f'an integer >= {minimum}'
  return Field(rule, lambda v: _is_int(v) and v >= minimum, **kwargs)


def _number(rule: str, ok: Callable[[float], bool], **kwargs) -> Field:
  return Field(f'a number {rule}', lambda v: _is_number(v) and ok(v), **kwargs)


def _choice(options, **kwargs) -> Field:
  options = tuple(options)
  shown = [o for o in options if not o.startswith('_')]  # Test-only models stay unlisted.
  return Field(f'one of {", ".join(map(repr, shown))}', lambda v: v in options,
               choices=options, **kwargs)


def _bool(**kwargs) -> Field:
  return Field('True or False', lambda v: isinstance(v, bool), **kwargs)


def _string(rule: str, **kwargs) -> Field:
  return Field(rule, lambda v: isinstance(v, str), **kwargs)


# Every config field, its valid values and its resume/state roles: the one source `validate`,
# `changed_fields` and `state_differences` read (configs/base.py documents what each field does).
# `quant` is checked as a whole by its owner, `QuantPolicy`, and the quantizer registry.
SCHEMA: dict[str, Field] = {
    'dataset': _choice((*datasets.SUPPORTED_DATASETS, datasets.FAKE), shapes_state=True),
    'data_dir': _string('a directory ("" = $TFDS_DATA_DIR or the TFDS default)', resumable=True),
    'download': _bool(resumable=True),
    'image_size': _int(0),
    'input_on_device': _bool(),
    'input_workers': _int(0),
    'input_backend': _choice(INPUT_BACKENDS, absent_means=GRAIN),
    'num_classes': _int(0, shapes_state=True),
    'model': _choice(MODELS, shapes_state=True),
    'dtype': _choice(COMPUTE_DTYPES),
    'quant': Field('a quantization policy', lambda v: True, shapes_state=True),
    'global_batch_size': _int(1),
    'num_epochs': _number('>= 0', lambda v: v >= 0, resumable=True),
    # A longer run also stretches the learning-rate schedule.
    'num_train_steps': Field('a number of steps >= 1, or -1 to train for num_epochs',
                             lambda v: _is_int(v) and (v == -1 or v >= 1), resumable=True),
    'optimizer.learning_rate': _number('> 0', lambda v: v > 0, shapes_state=True),
    'optimizer.learning_rate_batch_size': _number('> 0', lambda v: v > 0, shapes_state=True),
    'optimizer.momentum': _number('in [0, 1)', lambda v: 0 <= v < 1, shapes_state=True),
    'optimizer.nesterov': _bool(shapes_state=True),
    'optimizer.weight_decay': _number('>= 0', lambda v: v >= 0, shapes_state=True),
    'optimizer.level_lr_scale': _number('>= 0', lambda v: v >= 0, shapes_state=True),
    'optimizer.level_gradient': _choice(LEVEL_GRADIENTS, shapes_state=True),
    'optimizer.quantizer_optimizer': _choice(QUANTIZER_OPTIMIZERS, shapes_state=True),
    'optimizer.quantizer_lr_scale': _number('>= 0', lambda v: v >= 0, shapes_state=True),
    'optimizer.residual': _bool(shapes_state=True),
    'optimizer.level_update': _choice(LEVEL_UPDATES, shapes_state=True),
    'schedule.name': _choice(SCHEDULES),
    'schedule.warmup_epochs': _number('>= 0', lambda v: v >= 0),
    'schedule.decay_epochs': Field('a list of epochs (numbers)', lambda v: isinstance(
        v, (list, tuple)) and all(_is_number(e) and e >= 0 for e in v)),
    'schedule.decay_factor': _number('> 0', lambda v: v > 0),
    'label_smoothing': _number('in [0, 1)', lambda v: 0 <= v < 1),
    'bn_reestimation_batches': _int(0),
    'init_from': _string(f'a float run\'s workdir, or "" / {INIT_FROM_NONE!r} for none'),
    'distill.teacher_workdir': _string('a finished run\'s workdir, or "" for no teacher',
                                       absent_means=''),
    'distill.temperature': _number('> 0', lambda v: v > 0, absent_means=1.0),
    'distill.weight': _number('in [0, 1]', lambda v: 0 <= v <= 1, absent_means=1.0),
    'distill.teacher_dtype': _choice(TEACHER_DTYPES, absent_means='float32'),
    'seed': _int(0),
    'eval_batch_size': _int(1, resumable=True),
    'log_every_steps': _int(1, resumable=True),
    'eval_every_steps': _int(0, resumable=True),  # 0 = only at the end.
    'checkpoint_every_steps': _int(0, resumable=True),  # 0 = only at the end.
    # >= 1: Orbax's max_to_keep=0 deletes every checkpoint, older runs' included.
    'keep_checkpoints': _int(1, resumable=True),
    'weight_images': _bool(resumable=True),
    'multi_host': _bool(resumable=True),
    'on_corrupt_checkpoint': _choice(ON_CORRUPT_CHECKPOINT, resumable=True),
    'trust_checkpoints_without_digest': _bool(resumable=True),
    'allow_config_change': _bool(resumable=True),
}
RESUMABLE_FIELDS = frozenset(name for name, field in SCHEMA.items() if field.resumable)


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises one `ConfigError` listing every field with an unusable value.

  Each field is checked against `SCHEMA`; then the relations between fields, and `quant` by its
  owner. A field the schema does not know (a misspelt name in a config file) is an error too.
  """
  flat = _flat(config.to_dict(), groups=_GROUPS)
  problems = [_problem(name, flat[name], field)
              for name, field in SCHEMA.items() if name in flat and not field.valid(flat[name])]
  problems += [f'{name}: not a dqnn config field.{_nearest_hint(name, SCHEMA)}'
               for name in sorted(flat.keys() - SCHEMA.keys())]
  problems += _relation_problems(config)
  if 'quant' in config:
    problems += _quantization_problems(config.quant)
  if problems:
    raise ConfigError('Invalid config:\n  ' + '\n  '.join(problems))


def _nearest_hint(word: str, options) -> str:
  nearest = difflib.get_close_matches(word, options, n=1)
  return f' Did you mean {nearest[0]!r}?' if nearest else ''


def _problem(name: str, value: Any, field: Field) -> str:
  return f'{name}={value!r}: must be {field.rule}.{_nearest_hint(str(value), field.choices)}'


# Sub-configs whose fields the schema lists one by one (`quant` is checked as a whole).
_GROUPS = frozenset(name.split('.')[0] for name in SCHEMA if '.' in name)


def _relation_problems(config: ml_collections.ConfigDict) -> list[str]:
  problems = []
  if config.get('num_train_steps') == -1 and not (
      _is_number(config.get('num_epochs')) and config.num_epochs > 0):
    problems.append(f'num_epochs={config.get("num_epochs")!r}: must be > 0 when '
                    'num_train_steps=-1; nothing to train.')
  if config.get('dataset') == datasets.FAKE and not (
      _is_int(config.get('num_train_steps')) and config.num_train_steps > 0
      and config.get('num_classes') and config.get('image_size')):
    problems.append(f'dataset={datasets.FAKE!r}: set num_train_steps, num_classes and '
                    'image_size (synthetic data has no size of its own).')
  if config.get('input_backend') == DALI:
    problems += _dali_problems(config)
  if config.get('init_from') == INIT_FROM_REQUIRED:
    problems.append(
        f'init_from: this recipe fine-tunes a float run (learning rate '
        f'{config.optimizer.learning_rate}, {config.get("num_epochs")} epochs). Pass '
        f'--config.init_from=<float run workdir>, or --config.init_from={INIT_FROM_NONE} to train '
        'from scratch with it.')
  return problems


def _dali_problems(config: ml_collections.ConfigDict) -> list[str]:
  dataset = config.get('dataset')
  if dataset == datasets.FAKE or (dataset in datasets.SUPPORTED_DATASETS
                                  and datasets.is_small(dataset)):
    return [f"input_backend='dali': decodes JPEG datasets only, not {dataset!r}; use "
            '--config.input_backend=grain.']
  if config.get('input_on_device'):
    return ["input_backend='dali' with input_on_device=True: the on-device input forms batches "
            'without a host pipeline; use --config.input_on_device=False or '
            '--config.input_backend=grain.']
  return []


def init_from_workdir(config: ml_collections.ConfigDict) -> str:
  """The float run `config` initialises from, or '' when it trains from scratch."""
  return '' if config.get('init_from', '') in ('', INIT_FROM_NONE) else config.init_from


def _quantization_problems(quant: ml_collections.ConfigDict) -> list[str]:
  """What is wrong with `config.quant`: its policy (bits, edge layers, override fields) and the
  quantizers and options it names, globally and in each override, before any model is built."""
  try:
    QuantPolicy.from_config(quant)
  except ValueError as error:
    return [f'quant: {error}']
  problems = []
  choices = [('quant', quant.to_dict())] + [
      (f'quant.overrides[{pattern!r}]', fields)
      for pattern, fields in quant.get('overrides', {}).items()]
  for where, fields in choices:
    for kind, method, options in (('weight', 'weight_quantizer', 'weight_options'),
                                  ('activation', 'act_quantizer', 'act_options')):
      if method in fields or options in fields:
        try:
          registry.check(kind, fields.get(method, quant.get(method)),
                         fields.get(options, quant.get(options)))
        except ValueError as error:
          problems.append(f'{where}: {error}')
  return problems


def as_json(config: ml_collections.ConfigDict | Mapping[str, Any]) -> dict[str, Any]:
  """The config as config.json holds it (tuples become lists, other objects strings)."""
  as_dict = config.to_dict() if isinstance(config, ml_collections.ConfigDict) else config
  return json.loads(json.dumps(as_dict, default=str))


def _flat(config: Mapping[str, Any], prefix: str = '', *,
          groups: frozenset[str] | None = None) -> dict[str, Any]:
  """Dotted field names to values; only `groups` (all sub-configs if None) are descended into."""
  flat = {}
  for key, value in config.items():
    if isinstance(value, Mapping) and value and (groups is None or prefix + key in groups):
      flat.update(_flat(value, f'{prefix}{key}.', groups=groups))
    else:
      flat[prefix + key] = value
  return flat


def _differing(before: Mapping[str, Any], now: Mapping[str, Any],
               wanted: Callable[[str], bool]) -> list[tuple[str, Any, Any]]:
  before, now = _flat(as_json(before)), _flat(as_json(now))
  missing = object()

  def was(key):
    return before.get(key, getattr(_schema_field(key), 'absent_means', missing))

  return [(key, before.get(key, '(absent)'), now.get(key, '(absent)'))
          for key in sorted(before.keys() | now.keys())
          if wanted(key) and was(key) != now.get(key, missing)]


def _schema_field(key: str) -> Field | None:
  """The schema entry a flat key falls under (`quant.w_bits` under `quant`)."""
  return SCHEMA.get(key) or SCHEMA.get(key.split('.')[0])


def changed_fields(saved: Mapping[str, Any], config: ml_collections.ConfigDict) -> list[str]:
  """`'field: was x, now y'` for each differing field a resumed run may not change."""
  return [f'{key}: was {was!r}, now {now!r}' for key, was, now in _differing(
      saved, config, lambda key: not getattr(_schema_field(key), 'resumable', False))]


def state_differences(saved: Mapping[str, Any], config: ml_collections.ConfigDict) -> list[str]:
  """`'field: checkpoint x, this run y'` for each differing field that shapes the saved state."""
  return [f'{key}: checkpoint {was!r}, this run {now!r}' for key, was, now in _differing(
      saved, config, lambda key: getattr(_schema_field(key), 'shapes_state', False))]


def read(workdir: str) -> dict[str, Any] | None:
  """The workdir's config.json, or None if it has none; `ConfigError` if it is not JSON."""
  path = epath.Path(workdir) / CONFIG_FILE
  if not path.exists():
    return None
  try:
    return json.loads(path.read_text())
  except (UnicodeDecodeError, json.JSONDecodeError) as error:
    raise ConfigError(f'{path} is damaged ({error}); restore it (a copy is in every '
                      'checkpoint\'s config/ folder) or use a new --workdir.') from None


def check_resume(config: ml_collections.ConfigDict, saved: Mapping[str, Any], *,
                 workdir: str, step: int) -> list[str]:
  """The changed fields (see `changed_fields`); raises `ConfigChangedError` if there are any
  and the config does not set `allow_config_change`."""
  changes = changed_fields(saved, config)
  if changes and not config.get('allow_config_change', False):
    raise ConfigChangedError('\n  '.join([
        f'{workdir} was trained to step {step} with another config; refusing to resume. '
        'Changed fields:', *changes,
        'Resume with the saved config (its config.json), use a new --workdir, or pass '
        '--config.allow_config_change=True to continue with the new one (the old config is '
        f'then kept as config.{step}.json).']))
  return changes


def write(config: ml_collections.ConfigDict, workdir: str, *, step: int) -> None:
  """Writes config.json; a differing previous one is kept as `config.<step>.json`."""
  directory = epath.Path(workdir)
  text = json.dumps(config.to_dict(), indent=2, sort_keys=True, default=str)
  previous = read(workdir)
  if previous is not None and previous != as_json(config):
    kept, copy = directory / f'config.{step}.json', 1
    while kept.exists():
      kept, copy = directory / f'config.{step}.{copy}.json', copy + 1
    files.atomic_write_text(kept, (directory / CONFIG_FILE).read_text())
  files.atomic_write_text(directory / CONFIG_FILE, text)
