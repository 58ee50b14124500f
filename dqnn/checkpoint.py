"""Checkpoints of the train state (orbax `CheckpointManager`), verified when read back.

A checkpoint holds five items: `state` (the train state as a state dict), `config` (the run's
config as JSON, to explain a mismatch), `digest` (a sha256 of every array of `state`, taken
from the saved values), `train_metrics` (the training sums not yet logged, so that a resumed
run logs what an uninterrupted one does) and `input` (the training input's position, so that a
resumed run continues with exactly the next batch).

Restoring checks every array's path, shape and dtype against the run's abstract state first and
raises one `CheckpointMismatchError` naming the differences. A checkpoint that cannot be read,
whose arrays differ from their digest (or that has none, unless the run trusts such), or whose
DQ parameters are malformed is corrupt: by default it is moved aside (to
`<workdir>/corrupt_checkpoints/`, never deleted) and the previous checkpoint is used; with
`on_corrupt='stop'` the run stops, leaving it in place.
"""
import errno
import hashlib
import json
import logging as std_logging
import sys
from typing import Any, Mapping

from absl import logging
from etils import epath
import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from flax import serialization
from jax.experimental import multihost_utils

from dqnn import files
from dqnn import run_config
from dqnn.quantizers import validate_params
from dqnn.variables import COLLECTIONS

CHECKPOINT_DIR = 'checkpoints'
CORRUPT_DIR = 'corrupt_checkpoints'
_MAX_LISTED = 12
_TRAIN_METRICS_KEY = '(train_metrics)'
_INPUT_KEY = '(input)'


class CheckpointMismatchError(ValueError):
  """A checkpoint's arrays do not match the state this run builds."""


class CorruptCheckpointError(ValueError):
  """A checkpoint cannot be read back, or differs from what was saved."""


def _item_handlers() -> dict[str, ocp.CheckpointHandler]:
  # Named up front so that metadata can be read before anything was saved or restored.
  return {'state': ocp.StandardCheckpointHandler(), 'config': ocp.JsonCheckpointHandler(),
          'digest': ocp.JsonCheckpointHandler(), 'train_metrics': ocp.JsonCheckpointHandler(),
          'input': ocp.JsonCheckpointHandler()}


def checkpoint_dir(workdir: str) -> epath.Path:
  """`<workdir>/checkpoints`, absolute (orbax needs it) unless it is a URL such as gs://."""
  path = epath.Path(workdir)
  return (path if '://' in str(workdir) else path.resolve()) / CHECKPOINT_DIR


def create_manager(workdir: str, *, max_to_keep: int = 1,
                   read_only: bool = False) -> ocp.CheckpointManager:
  return ocp.CheckpointManager(
      checkpoint_dir(workdir),
      options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=not read_only,
                                           read_only=read_only),
      item_handlers=_item_handlers())


def _path_name(path) -> str:
  return '/'.join(str(getattr(k, 'key', getattr(k, 'idx', k))) for k in path)


def _host_value(leaf) -> np.ndarray:
  """A leaf's global value on this host; every process must call this (gathers are collective)."""
  if isinstance(leaf, jax.Array):
    if leaf.is_fully_replicated:
      leaf = leaf.addressable_data(0)
    elif not leaf.is_fully_addressable:
      leaf = multihost_utils.process_allgather(leaf, tiled=True)
  return np.ascontiguousarray(leaf)


def digest(state_dict: Any) -> dict[str, str]:
  """`{array path: sha256 of its dtype, shape and bytes}` of a state dict's global arrays."""
  digests = {}
  for path, leaf in jax.tree_util.tree_leaves_with_path(state_dict):
    value = _host_value(leaf)
    content = hashlib.sha256(f'{value.dtype.str}{value.shape}'.encode())
    content.update(value.tobytes())
    digests[_path_name(path)] = content.hexdigest()
  return digests


def _json_digest(value: Any) -> str:
  return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def save(manager: ocp.CheckpointManager, step: int, state: Any,
         config: ml_collections.ConfigDict, *,
         train_metrics: Mapping[str, Any] | None = None,
         input_state: Mapping[str, Any] | None = None) -> None:
  """Saves `state` with its digest; `train_metrics`, `input_state`: JSON to hand back."""
  state_dict = serialization.to_state_dict(state)
  train_metrics, input_state = dict(train_metrics or {}), dict(input_state or {})
  # Keyed apart from the state's array paths, which start with a TrainState field.
  digests = {**digest(state_dict), _TRAIN_METRICS_KEY: _json_digest(train_metrics),
             _INPUT_KEY: _json_digest(input_state)}
  try:
    manager.save(step, force=True, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state_dict),
        config=ocp.args.JsonSave(config.to_dict()),
        digest=ocp.args.JsonSave(digests),
        train_metrics=ocp.args.JsonSave(train_metrics),
        input=ocp.args.JsonSave(input_state)))
  except Exception as error:  # pylint: disable=broad-except
    _raise_if_disk_full(manager, error)
    raise


def finish(manager: ocp.CheckpointManager) -> None:
  """Waits for the save in flight, then closes `manager`; a full disk is a `DiskFullError`."""
  try:
    manager.wait_until_finished()
  except Exception as error:  # pylint: disable=broad-except
    _raise_if_disk_full(manager, error)
    raise
  finally:
    manager.close()


def _raise_if_disk_full(manager: ocp.CheckpointManager, error: Exception) -> None:
  # orbax writes a checkpoint under a temporary name and commits it only when complete.
  if files.is_disk_full(error):
    raise files.DiskFullError(
        errno.ENOSPC, f'No space left on the device while saving a checkpoint in '
        f'{manager.directory}; it was not committed and the earlier checkpoints are intact. '
        'Free some space and run again (training resumes from the latest checkpoint).'
    ) from None


def _flat(tree: Any) -> dict[str, tuple[tuple[int, ...], str]]:
  return {'/'.join(str(k.key) for k in path): (tuple(leaf.shape), str(leaf.dtype))
          for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def _differences(saved: Any, wanted: Any) -> list[str]:
  saved, wanted = _flat(saved), _flat(wanted)
  lines = [f'{path}: checkpoint {saved[path][0]} {saved[path][1]}, this run '
           f'{wanted[path][0]} {wanted[path][1]}'
           for path in sorted(saved.keys() & wanted.keys()) if saved[path] != wanted[path]]
  lines += [f'{path}: only in the checkpoint' for path in sorted(saved.keys() - wanted.keys())]
  lines += [f'{path}: missing from the checkpoint' for path in sorted(wanted.keys() - saved.keys())]
  return lines


def restore_input_state(manager: ocp.CheckpointManager, step: int) -> dict[str, Any] | None:
  """The training input's position saved with checkpoint `step` (None if it has none)."""
  if not _has_item(manager, step, 'input'):
    return None
  return manager.restore(step, args=ocp.args.Composite(input=ocp.args.JsonRestore())).input


def saved_config(manager: ocp.CheckpointManager, step: int) -> dict[str, Any]:
  """The config a checkpoint was saved with, as JSON."""
  return manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore())).config


def _first_line(error: Exception) -> str:
  line = (str(error).strip().splitlines() or [''])[0]
  line = line.split(' See full TensorStore details')[0]  # The rest is a repr of a method.
  return f'{type(error).__name__}: {line[:300]}'


def _is_leftover_of_a_failed_read(error: BaseException | None) -> bool:
  return (str(error).startswith('Encountered error while reading array index')
          or (isinstance(error, RuntimeError) and str(error) == 'Event loop is closed'))


class _DropFailedReadLeftovers(std_logging.Filter):
  """Drops asyncio's "Task exception was never retrieved" reports of a failed read's leftovers."""

  def filter(self, record: std_logging.LogRecord) -> bool:
    return not (record.exc_info and _is_leftover_of_a_failed_read(record.exc_info[1]))


def _silence_leftovers_of_failed_reads() -> None:
  """Drops what a failed orbax read leaves behind, keeping every other error report.

  When one array of a checkpoint cannot be read, orbax's restore raises, but the reads of the
  other arrays are still in flight: as they finish (or are collected) they report to a closed
  event loop (Python's unraisable hook) or as never-retrieved task exceptions (asyncio's
  logger), each with a traceback, long after the error was caught and `CorruptCheckpointError`
  logged its one line. Installed before the first read, for the rest of the process.
  """
  asyncio_logger = std_logging.getLogger('asyncio')
  if not any(isinstance(f, _DropFailedReadLeftovers) for f in asyncio_logger.filters):
    asyncio_logger.addFilter(_DropFailedReadLeftovers())
  previous = sys.unraisablehook
  if getattr(previous, 'drops_failed_read_leftovers', False):
    return

  def hook(unraisable):
    if not _is_leftover_of_a_failed_read(unraisable.exc_value):
      previous(unraisable)

  hook.drops_failed_read_leftovers = True
  sys.unraisablehook = hook


def _has_item(manager: ocp.CheckpointManager, step: int, item: str) -> bool:
  return (epath.Path(manager.directory) / str(step) / item).exists()


def _read(manager: ocp.CheckpointManager, step: int, target: Any, *,
          trust_without_digest: bool) -> tuple[Any, dict[str, Any]]:
  """(state dict, train_metrics) of `step`, checked against its digest.

  Raises `CorruptCheckpointError` naming the checkpoint if it cannot be read or differs, or if
  it has no digest and `trust_without_digest` is False.
  """
  name = f'{manager.directory}/{step}'
  if not trust_without_digest and not _has_item(manager, step, 'digest'):
    # Without it a copied or swapped step would be restored as if it were this one.
    raise CorruptCheckpointError(
        f'Checkpoint {name} has no digest, so its arrays cannot be verified (it was saved by a '
        'dqnn older than digests, or its digest/ folder was removed). To restore it unverified, '
        'run with --config.trust_checkpoints_without_digest=True.')
  items = {'state': ocp.args.StandardRestore(target)}
  for item in ('digest', 'train_metrics', 'input'):
    if _has_item(manager, step, item):
      items[item] = ocp.args.JsonRestore()
  _silence_leftovers_of_failed_reads()
  try:
    restored = manager.restore(step, args=ocp.args.Composite(**items))
  except Exception as error:  # pylint: disable=broad-except
    # Truncated or garbled files surface as assorted TensorStore / JSON errors.
    raise CorruptCheckpointError(
        f'Checkpoint {name} cannot be read ({_first_line(error)}).') from None
  if 'digest' not in items:
    logging.warning('Checkpoint %s has no digest; restored unverified.', name)
  else:
    saved, actual = restored.digest, digest(restored.state)
    actual[_TRAIN_METRICS_KEY] = _json_digest(dict(restored.get('train_metrics') or {}))
    if _INPUT_KEY in saved:  # Checkpoints from before the input's position was saved lack it.
      actual[_INPUT_KEY] = _json_digest(dict(restored.get('input') or {}))
    differing = sorted(path for path in saved.keys() | actual.keys()
                       if saved.get(path) != actual.get(path))
    if differing:
      raise CorruptCheckpointError(
          f'Checkpoint {name} is corrupt: {len(differing)} array(s) differ from what was saved '
          f'({", ".join(differing[:4])}{", ..." if len(differing) > 4 else ""}).')
  return restored.state, dict(restored.get('train_metrics') or {})


def _state_metadata(manager: ocp.CheckpointManager, step: int) -> Any:
  """The saved arrays' shapes and dtypes; `CorruptCheckpointError` if they cannot be read."""
  try:
    return manager.item_metadata(step).state.tree
  except Exception as error:  # pylint: disable=broad-except
    raise CorruptCheckpointError(f'Checkpoint {manager.directory}/{step} cannot be read '
                                 f'({_first_line(error)}).') from None


def _check_structure(manager: ocp.CheckpointManager, step: int, target: Any,
                     config: ml_collections.ConfigDict) -> None:
  """Raises `CheckpointMismatchError` before any array is read."""
  differences = _differences(_state_metadata(manager, step), target)
  if differences:
    config_lines = run_config.state_differences(saved_config(manager, step), config) or ['(none)']
    listed = differences[:_MAX_LISTED] + (
        [f'... and {len(differences) - _MAX_LISTED} more'] if len(differences) > _MAX_LISTED
        else [])
    raise CheckpointMismatchError('\n  '.join([
        f'The checkpoint at {manager.directory}/{step} does not match the model this config '
        f'builds ({len(differences)} differing arrays); it was left untouched.',
        'Differing arrays:', *listed,
        'Differing config fields:', *config_lines,
        'Resume with the config that wrote the checkpoint, or use a new --workdir.']))


def _move_aside(manager: ocp.CheckpointManager, steps: list[int]) -> None:
  """Moves corrupt steps out of orbax's sight (kept for inspection) on process 0."""
  if jax.process_index() == 0:
    root = epath.Path(manager.directory).parent / CORRUPT_DIR
    root.mkdir(parents=True, exist_ok=True)
    for step in steps:
      destination, copy = root / str(step), 1
      while destination.exists():
        destination, copy = root / f'{step}.{copy}', copy + 1
      (epath.Path(manager.directory) / str(step)).rename(destination)
      logging.warning('Moved the corrupt checkpoint of step %d to %s.', step, destination)
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices('dqnn_corrupt_checkpoints_moved')
  manager.reload()


def restore(manager: ocp.CheckpointManager, abstract_state: Any,
            config: ml_collections.ConfigDict, *, on_corrupt: str = 'fallback',
            trust_without_digest: bool = False) -> tuple[Any, int, dict[str, Any]]:
  """Restores the latest intact checkpoint into `abstract_state`'s structure and shardings.

  `abstract_state` holds `jax.ShapeDtypeStruct`s with shardings (from `jax.eval_shape`).
  Returns (state, step, train_metrics as saved). Raises `CheckpointMismatchError` before
  reading any array if the checkpoint does not fit. A corrupt checkpoint (see the module doc)
  is moved aside and the previous one tried (`on_corrupt='fallback'`), or raises
  `CorruptCheckpointError` (`'stop'`, or when no intact checkpoint is left), leaving it in place.
  A checkpoint without a digest counts as corrupt unless `trust_without_digest`.
  """
  if on_corrupt not in run_config.ON_CORRUPT_CHECKPOINT:
    raise ValueError(f'on_corrupt={on_corrupt!r}; choose one of '
                     f'{run_config.ON_CORRUPT_CHECKPOINT}.')
  target = serialization.to_state_dict(abstract_state)
  corrupt = []
  for step in sorted(manager.all_steps(), reverse=True):
    try:
      _check_structure(manager, step, target, config)
      restored, train_metrics = _read(manager, step, target,
                                      trust_without_digest=trust_without_digest)
      state = serialization.from_state_dict(abstract_state, restored)
      try:
        validate_params(state.params)
      except ValueError as error:
        raise CorruptCheckpointError(
            f'Checkpoint {manager.directory}/{step} holds malformed parameters: {error}') from None
    except CorruptCheckpointError as error:
      if on_corrupt == 'stop':
        raise CorruptCheckpointError(
            f'{error} Stopped (on_corrupt_checkpoint=stop), leaving it in place: move it aside '
            'to resume from the previous checkpoint, or run with '
            '--config.on_corrupt_checkpoint=fallback.') from None
      logging.error('%s Trying the previous checkpoint.', error)
      corrupt.append((step, str(error)))
      continue
    if corrupt:
      _move_aside(manager, [s for s, _ in corrupt])
      logging.warning('Resumed from step %d, the latest intact checkpoint.', step)
    return state, step, train_metrics
  raise CorruptCheckpointError('\n  '.join([
      f'No checkpoint in {manager.directory} can be restored; all were left in place:',
      *(message for _, message in corrupt),
      'Use a new --workdir to start afresh.']))


def restore_state_dict(workdir: str, step: int | None = None) -> dict[str, Any]:
  """Another run's saved state as host arrays, whatever devices it was saved from.

  Reads the latest step unless `step` is given; raises FileNotFoundError if there is none and
  `CorruptCheckpointError` if it differs from what was saved. A checkpoint without a digest is
  read with a warning: reading never writes to that run.
  """
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  with create_manager(workdir, read_only=True) as manager:
    step = manager.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f'{workdir!r} has no checkpoint in {manager.directory}.')
    # Without a target orbax would place arrays on the saving run's devices.
    target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
                          _state_metadata(manager, step))
    state, _ = _read(manager, step, target, trust_without_digest=True)
  return jax.device_get(state)


def restore_variables(workdir: str) -> dict[str, Any]:
  """`{'params', 'batch_stats', 'quant_stats'}` (host arrays) of another run's latest checkpoint."""
  state = restore_state_dict(workdir)
  return {name: state.get(name, {}) for name in COLLECTIONS}
