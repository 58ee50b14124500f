"""Checkpoints of the train state (orbax `CheckpointManager`) with a compatibility check.

A checkpoint holds three items: `state` (the train state as a state dict), `config` (the run's
config as JSON, to explain a mismatch) and `input` (the training input's position, so a resumed
run continues with exactly the next batch). Restoring checks every array's path, shape and dtype
against the run's abstract state first and raises one `CheckpointMismatchError` naming the
differences; nothing on disk is changed by a failed restore.
"""
from typing import Any, Mapping

from etils import epath
import jax
import ml_collections
import orbax.checkpoint as ocp
from flax import serialization

from dqnn.quantizers import dq_weight

CHECKPOINT_DIR = 'checkpoints'
# Config fields that decide the state's structure; differences in them explain a mismatch.
STRUCTURAL_FIELDS = ('model', 'quant', 'dataset', 'num_classes', 'optimizer')
_MAX_LISTED = 12


class CheckpointMismatchError(ValueError):
  """A checkpoint's arrays do not match the state this run builds."""


def _item_handlers() -> dict[str, ocp.CheckpointHandler]:
  # Named up front so that metadata can be read before anything was saved or restored.
  return {'state': ocp.StandardCheckpointHandler(), 'config': ocp.JsonCheckpointHandler(),
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


def save(manager: ocp.CheckpointManager, step: int, state: Any,
         config: ml_collections.ConfigDict, input_state: Mapping[str, Any]) -> None:
  manager.save(step, force=True, args=ocp.args.Composite(
      state=ocp.args.StandardSave(serialization.to_state_dict(state)),
      config=ocp.args.JsonSave(config.to_dict()),
      input=ocp.args.JsonSave(dict(input_state))))


def restore_input_state(manager: ocp.CheckpointManager, step: int) -> dict[str, Any]:
  """The training input's position saved with checkpoint `step`."""
  return manager.restore(step, args=ocp.args.Composite(input=ocp.args.JsonRestore())).input


def _flat(tree: Any) -> dict[str, tuple[tuple[int, ...], str]]:
  return {'/'.join(str(k.key) for k in path): (tuple(leaf.shape), str(leaf.dtype))
          for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def _flat_config(config: Mapping[str, Any], prefix: str = '') -> dict[str, Any]:
  flat = {}
  for key, value in config.items():
    if isinstance(value, Mapping):
      flat.update(_flat_config(value, f'{prefix}{key}.'))
    else:
      flat[prefix + key] = list(value) if isinstance(value, tuple) else value
  return flat


def _differences(saved: Any, wanted: Any) -> list[str]:
  saved, wanted = _flat(saved), _flat(wanted)
  lines = [f'{path}: checkpoint {saved[path][0]} {saved[path][1]}, this run '
           f'{wanted[path][0]} {wanted[path][1]}'
           for path in sorted(saved.keys() & wanted.keys()) if saved[path] != wanted[path]]
  lines += [f'{path}: only in the checkpoint' for path in sorted(saved.keys() - wanted.keys())]
  lines += [f'{path}: missing from the checkpoint' for path in sorted(wanted.keys() - saved.keys())]
  return lines


def _config_differences(saved: Mapping[str, Any], config: ml_collections.ConfigDict) -> list[str]:
  saved = _flat_config({k: v for k, v in saved.items() if k in STRUCTURAL_FIELDS})
  now = _flat_config({k: v for k, v in config.to_dict().items() if k in STRUCTURAL_FIELDS})
  return [f'{key}: checkpoint {saved.get(key)!r}, this run {now.get(key)!r}'
          for key in sorted(saved.keys() | now.keys()) if saved.get(key) != now.get(key)]


def restore(manager: ocp.CheckpointManager, abstract_state: Any,
            config: ml_collections.ConfigDict) -> tuple[Any, int]:
  """Restores the latest checkpoint into `abstract_state`'s structure and shardings.

  `abstract_state` holds `jax.ShapeDtypeStruct`s with shardings (from `jax.eval_shape`).
  Returns (state, step). Raises `CheckpointMismatchError` before reading any array if the
  checkpoint does not fit, and `ValueError` if its DQ parameters are malformed.
  """
  step = manager.latest_step()
  target = serialization.to_state_dict(abstract_state)
  saved = manager.item_metadata(step).state.tree
  differences = _differences(saved, target)
  if differences:
    saved_config = manager.restore(step, args=ocp.args.Composite(
        config=ocp.args.JsonRestore())).config
    config_lines = _config_differences(saved_config, config) or ['(none)']
    listed = differences[:_MAX_LISTED] + (
        [f'... and {len(differences) - _MAX_LISTED} more'] if len(differences) > _MAX_LISTED
        else [])
    raise CheckpointMismatchError('\n  '.join([
        f'The checkpoint at {manager.directory}/{step} does not match the model this config '
        f'builds ({len(differences)} differing arrays); it was left untouched.',
        'Differing arrays:', *listed,
        'Differing config fields:', *config_lines,
        'Resume with the config that wrote the checkpoint, or use a new --workdir.']))
  restored = manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(target))).state
  state = serialization.from_state_dict(abstract_state, restored)
  dq_weight.validate(state.params)
  return state, step


def restore_state_dict(workdir: str, step: int | None = None) -> dict[str, Any]:
  """Another run's saved state as host arrays, whatever devices it was saved from.

  Reads the latest step unless `step` is given; raises FileNotFoundError if there is none.
  """
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  with create_manager(workdir, read_only=True) as manager:
    step = manager.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f'{workdir!r} has no checkpoint in {manager.directory}.')
    # Without a target orbax would place arrays on the saving run's devices.
    target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
                          manager.item_metadata(step).state.tree)
    state = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(target))).state
  return jax.device_get(state)


def restore_variables(workdir: str) -> dict[str, Any]:
  """`{'params', 'batch_stats', 'quant_stats'}` (host arrays) of another run's latest checkpoint."""
  state = restore_state_dict(workdir)
  return {name: state.get(name, {}) for name in ('params', 'batch_stats', 'quant_stats')}
