"""The training input a run steps through: host pipeline batches or batches formed on devices.

Both kinds hand the jitted train step `inputs` and a `make_batch(inputs)` to trace inside it, and
report their position (`get_state`), which checkpoints save so that a resumed run continues with
exactly the next batch.
"""
from typing import Any, Iterator

from absl import logging
import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from dqnn.data import dali_input
from dqnn.data import datasets
from dqnn.data import on_device
from dqnn.data import pipeline


class HostInput:
  """Training batches from a host pipeline, handed to the step as global arrays."""

  def __init__(self, batches: Iterator[dict[str, np.ndarray]], sharding: NamedSharding,
               steps_per_epoch: int):
    self._batches = batches
    self._sharding = sharding
    self.steps_per_epoch = steps_per_epoch

  def next(self) -> dict[str, jax.Array]:
    return global_batch(next(self._batches), self._sharding)

  @staticmethod
  def make_batch(inputs: dict[str, jax.Array]) -> dict[str, jax.Array]:
    return inputs

  def get_state(self) -> dict[str, Any]:
    return self._batches.get_state() if hasattr(self._batches, 'get_state') else {}

  def set_state(self, state: dict[str, Any]) -> None:
    if hasattr(self._batches, 'set_state'):
      self._batches.set_state(state)


class DeviceInput:
  """Training batches formed on the devices from a split they hold (`on_device.DeviceTrainData`)."""

  def __init__(self, device_data: on_device.DeviceTrainData):
    self._data = device_data
    self._step = 0
    self.make_batch = device_data.make_batch
    self.steps_per_epoch = device_data.steps_per_epoch

  def next(self) -> dict[str, Any]:
    inputs = self._data.inputs(self._step)
    self._step += 1
    return inputs

  def get_state(self) -> dict[str, Any]:
    return {'next_step': self._step, 'num_devices': self._data.num_devices}

  def set_state(self, state: dict[str, Any]) -> None:
    self._step = int(state['next_step'])
    saved = state.get('num_devices', self._data.num_devices)
    if saved != self._data.num_devices:
      # Each device draws from its own shard of the split, so the shards, and with them the
      # batches, depend on the device count. Training stays correct; only its data order moves.
      logging.warning(
          'The run trained to step %d on %d devices and resumes on %d: the on-device input '
          'draws other batches from here on than a run on %d devices would. Resume on %d '
          'devices to continue it exactly (with a new --workdir, '
          '--config.input_on_device=False draws batches independent of the device count).',
          self._step, saved, self._data.num_devices, saved, saved)


def training_input(config: ml_collections.ConfigDict, info: datasets.DatasetInfo,
                   mesh: Mesh) -> HostInput | DeviceInput | dali_input.DaliInput:
  """This run's training input, positioned at its first batch."""
  batch_sharding = NamedSharding(mesh, P('data'))
  steps_per_epoch = info.num_train // config.global_batch_size
  if info.name == datasets.FAKE:
    return HostInput(pipeline.fake_batches(global_batch_size=config.global_batch_size,
                                           image_size=info.image_size,
                                           num_classes=info.num_classes, seed=config.seed),
                     batch_sharding, steps_per_epoch)
  if config.input_on_device:
    return DeviceInput(on_device.DeviceTrainData(info, config.data_dir or None, mesh,
                                                 global_batch_size=config.global_batch_size,
                                                 seed=config.seed))
  if config.get('input_backend') == 'dali':
    return dali_input.DaliInput(info, config.data_dir or None, batch_sharding,
                                global_batch_size=config.global_batch_size, seed=config.seed,
                                image_size=info.image_size)
  batches = pipeline.train_dataset(info, config.data_dir or None,
                                   global_batch_size=config.global_batch_size, seed=config.seed,
                                   image_size=info.image_size, num_workers=config.input_workers)
  return HostInput(iter(batches), batch_sharding, steps_per_epoch)


def global_batch(batch: dict[str, np.ndarray], sharding: NamedSharding) -> dict[str, jax.Array]:
  """This host's slice of a batch, as the global array all hosts' slices form together."""
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), batch)
