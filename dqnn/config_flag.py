"""Checks `--config=<file>[:arg]` and its `--config.<field>=<value>` overrides before absl does.

absl reports a missing config file, an unknown override or a misplaced one (`--config.w_bits`
for `quant.w_bits`) as a traceback of 35-55 lines; here each is one line naming the fix. The
config file is loaded the way `ml_collections.config_flags` loads it (its `get_config(arg)`),
with the folder above `configs/` importable, so that `python -m dqnn.main` runs from any
directory.
"""
import difflib
import importlib.util
import os
import sys
from typing import Any, Sequence

import ml_collections

_PREFIX = '--config'


class ConfigFlagError(ValueError):
  """The --config flag names no loadable file, or an override names no field."""


def check(argv: Sequence[str]) -> None:
  """Raises `ConfigFlagError` for the first mistake in `argv`'s config flags."""
  spec = _config_spec(argv)
  if spec is None:
    return  # absl reports the missing required flag itself.
  config = load(spec)
  path = spec.split(':', 1)[0]
  fields = _field_paths(config)
  for name in _override_names(argv):
    if name not in fields and not any(field.startswith(name + '.') for field in fields):
      raise ConfigFlagError(_unknown_field_message(name, fields, path))


def load(spec: str) -> ml_collections.ConfigDict:
  """The config of `spec`, '<file>[:arg]', loaded as `--config=<spec>` is; `ConfigFlagError`
  for a missing file."""
  path, arg = spec.split(':', 1) if ':' in spec else (spec, None)
  if not os.path.isfile(path):
    raise ConfigFlagError(_missing_file_message(path))
  _make_configs_importable(path)
  return _load(path, arg)


def _config_spec(argv: Sequence[str]) -> str | None:
  for position, arg in enumerate(argv):
    if arg.startswith(_PREFIX + '='):
      return arg[len(_PREFIX) + 1:]
    if arg == _PREFIX and position + 1 < len(argv):
      return argv[position + 1]
  return None


def _override_names(argv: Sequence[str]) -> list[str]:
  names = []
  for arg in argv:
    for prefix in (_PREFIX + '.', '--no' + _PREFIX[2:] + '.'):
      if arg.startswith(prefix):
        names.append(arg[len(prefix):].split('=', 1)[0])
  return names


def _missing_file_message(path: str) -> str:
  folder = os.path.dirname(path) or '.'
  existing = sorted(name for name in os.listdir(folder) if name.endswith('.py')
                    and not name.startswith('_')) if os.path.isdir(folder) else []
  close = difflib.get_close_matches(os.path.basename(path), existing, n=3, cutoff=0.6)
  hint = (f' Did you mean {", ".join(os.path.join(folder, name) for name in close)}?' if close
          else f' {folder}/ holds {len(existing)} config files.' if existing
          else ' Give the path of a config file, e.g. configs/cifar100_resnet20_w2a2.py, '
               'relative to this directory or absolute.')
  return f'--config={path}: no such file (from {os.getcwd()}).{hint}'


def _make_configs_importable(path: str) -> None:
  # Config files import `configs.base`: the folder that holds `configs/` must be on sys.path.
  folder = os.path.dirname(os.path.abspath(path))
  if os.path.basename(folder) == 'configs' and os.path.dirname(folder) not in sys.path:
    sys.path.insert(0, os.path.dirname(folder))


def _load(path: str, arg: str | None) -> ml_collections.ConfigDict:
  spec = importlib.util.spec_from_file_location('_dqnn_config_check', path)
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
  except ImportError as error:  # Also a `configs` namespace package found elsewhere.
    if error.name not in ('configs', 'configs.base'):
      raise
    raise ConfigFlagError(
        f'--config={path} imports the configs package: give a file inside the repository\'s '
        'configs/ folder, or run from the repository root.') from None
  return module.get_config(arg) if arg is not None else module.get_config()


def _field_paths(config: Any, prefix: str = '') -> set[str]:
  paths = set()
  for key, value in config.items():
    paths.add(prefix + key)
    if isinstance(value, (ml_collections.ConfigDict, dict)):
      paths |= _field_paths(value, f'{prefix}{key}.')
  return paths


def _unknown_field_message(name: str, fields: set[str], path: str) -> str:
  leaf = name.rsplit('.', 1)[-1]
  same_leaf = sorted(field for field in fields if field.rsplit('.', 1)[-1] == leaf)
  close = same_leaf or difflib.get_close_matches(name, sorted(fields), n=3, cutoff=0.6)
  hint = f' Did you mean {" or ".join(f"--config.{field}" for field in close)}?' if close else ''
  return f'--config.{name}: {path} has no field {name!r}.{hint}'
