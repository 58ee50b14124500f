"""A run's config: checked before training, kept in the workdir, compared when a run resumes.

`workdir/config.json` is the config the run trains with. Resuming with a config that differs in
a field outside `RESUMABLE_FIELDS` is refused (`ConfigChangedError`, naming the fields) unless
`allow_config_change` is set; the previous config.json is then kept as `config.<step>.json`.
"""
import json
from typing import Any, Mapping

from etils import epath
import ml_collections

from dqnn import files
from dqnn.models.policy import QuantPolicy
from dqnn.quantizers import registry

CONFIG_FILE = 'config.json'
COMPUTE_DTYPES = ('float32', 'bfloat16', 'float16')
ON_CORRUPT_CHECKPOINT = ('fallback', 'stop')
# `init_from` values that name no run: a fine-tune recipe's placeholder, and "from scratch".
INIT_FROM_REQUIRED, INIT_FROM_NONE = 'required', 'none'
# Fields a resumed run may change freely: how long it trains (a longer run also stretches the
# learning-rate schedule), where the data lies, and bookkeeping. Nothing here changes what the
# steps already taken computed.
RESUMABLE_FIELDS = frozenset({
    'num_train_steps', 'num_epochs', 'data_dir', 'download', 'eval_batch_size',
    'log_every_steps', 'eval_every_steps', 'checkpoint_every_steps', 'keep_checkpoints',
    'weight_images', 'multi_host', 'allow_config_change', 'on_corrupt_checkpoint',
    'trust_checkpoints_without_digest'})


class ConfigError(ValueError):
  """A config field holds a value training cannot use."""


class ConfigChangedError(ValueError):
  """A resumed run's config differs from the one its workdir was trained with."""


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises one `ConfigError` listing every field with an unusable value."""
  problems = []
  for name in ('global_batch_size', 'eval_batch_size', 'log_every_steps'):
    value = config.get(name)
    if not isinstance(value, int) or value <= 0:
      problems.append(f'{name}={value!r}: must be a positive integer.')
  batches = config.get('bn_reestimation_batches', 0)
  if not isinstance(batches, int) or batches < 0:
    problems.append(f'bn_reestimation_batches={batches!r}: must be an integer >= 0 (0 = off).')
  if config.get('dtype') not in COMPUTE_DTYPES:
    problems.append(f'dtype={config.get("dtype")!r}: the compute dtype is one of '
                    f'{", ".join(COMPUTE_DTYPES)}.')
  steps = config.get('num_train_steps', -1)
  if not _is_int(steps) or (steps != -1 and steps < 1):
    problems.append(f'num_train_steps={steps!r}: a number of steps >= 1, or -1 to train for '
                    'num_epochs.')
  elif steps == -1 and not (_is_number(config.get('num_epochs')) and config.num_epochs > 0):
    problems.append(f'num_epochs={config.get("num_epochs")!r}: must be > 0 when '
                    'num_train_steps=-1; nothing to train.')
  keep = config.get('keep_checkpoints', 1)
  if not _is_int(keep) or keep < 1:
    # Orbax's max_to_keep=0 deletes every checkpoint, older runs' included.
    problems.append(f'keep_checkpoints={keep!r}: must be an integer >= 1 (the newest '
                    'checkpoint is always kept).')
  for name in ('eval_every_steps', 'checkpoint_every_steps'):
    value = config.get(name, 0)
    if not _is_int(value) or value < 0:
      problems.append(f'{name}={value!r}: an integer >= 1, or 0 for only at the end.')
  smoothing = config.get('label_smoothing', 0.0)
  if not _is_number(smoothing) or not 0 <= smoothing < 1:
    problems.append(f'label_smoothing={smoothing!r}: must be in [0, 1).')
  problems += _optimizer_problems(config.get('optimizer', {}))
  if config.get('on_corrupt_checkpoint', 'fallback') not in ON_CORRUPT_CHECKPOINT:
    problems.append(f'on_corrupt_checkpoint={config.on_corrupt_checkpoint!r}: one of '
                    f'{", ".join(ON_CORRUPT_CHECKPOINT)}.')
  if config.get('init_from') == INIT_FROM_REQUIRED:
    problems.append(
        f'init_from: this recipe fine-tunes a float run (learning rate '
        f'{config.optimizer.learning_rate}, {config.get("num_epochs")} epochs). Pass '
        f'--config.init_from=<float run workdir>, or --config.init_from={INIT_FROM_NONE} to train '
        'from scratch with it.')
  for name in ('trust_checkpoints_without_digest', 'allow_config_change'):
    if not isinstance(config.get(name, False), bool):
      problems.append(f'{name}={config.get(name)!r}: must be True or False.')
  if 'quant' in config:
    problems += _quantization_problems(config.quant)
  if problems:
    raise ConfigError('Invalid config:\n  ' + '\n  '.join(problems))


def init_from_workdir(config: ml_collections.ConfigDict) -> str:
  """The float run `config` initialises from, or '' when it trains from scratch."""
  return '' if config.get('init_from', '') in ('', INIT_FROM_NONE) else config.init_from


def _is_int(value) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool)


def _optimizer_problems(optimizer: Mapping[str, Any]) -> list[str]:
  """Rates that would make SGD ascend or stall: positive rates, momentum in [0, 1)."""
  problems = []
  checks = (('learning_rate', lambda v: v > 0, '> 0'),
            ('learning_rate_batch_size', lambda v: v > 0, '> 0'),
            ('weight_decay', lambda v: v >= 0, '>= 0'),
            ('momentum', lambda v: 0 <= v < 1, 'in [0, 1)'),
            ('level_lr_scale', lambda v: v >= 0, '>= 0'),
            ('quantizer_lr_scale', lambda v: v >= 0, '>= 0'))
  for name, ok, rule in checks:
    if name in optimizer:
      value = optimizer[name]
      if not _is_number(value) or not ok(value):
        problems.append(f'optimizer.{name}={value!r}: must be {rule}.')
  return problems


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


def _flat(config: Mapping[str, Any], prefix: str = '') -> dict[str, Any]:
  flat = {}
  for key, value in config.items():
    if isinstance(value, Mapping) and value:
      flat.update(_flat(value, f'{prefix}{key}.'))
    else:
      flat[prefix + key] = value
  return flat


def changed_fields(saved: Mapping[str, Any], config: ml_collections.ConfigDict) -> list[str]:
  """`'field: was x, now y'` for each differing field outside `RESUMABLE_FIELDS`."""
  before, now = _flat(as_json(saved)), _flat(as_json(config))
  missing = object()
  return [f'{key}: was {before.get(key, "(absent)")!r}, now {now.get(key, "(absent)")!r}'
          for key in sorted(before.keys() | now.keys())
          if key.split('.')[0] not in RESUMABLE_FIELDS
          and before.get(key, missing) != now.get(key, missing)]


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
