"""A small training split held on the accelerators, batched and augmented inside the step.

The uint8 images live on the devices, sharded along the batch axis: with D devices, device d
holds examples [d*m, (d+1)*m) of the split, m = n // D (the < D examples left over are unused),
and every host uploads only its own devices' shards. Each step, every device draws its part of
the batch from its own shard, in the order of a per-(seed, epoch, device) permutation, and pads,
crops and flips it in the jitted step: no host pipeline and no host-to-device image traffic.
Batch k is a pure function of (seed, k), so resuming is exact.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from dqnn.data import datasets
from dqnn.data import transforms


class DeviceTrainData:
  """The training split on the devices of `mesh` (a 1-D mesh over axis 'data')."""

  def __init__(self, info: datasets.DatasetInfo, data_dir: str | None, mesh: jax.sharding.Mesh,
               *, global_batch_size: int, seed: int):
    if not datasets.is_small(info.name):
      raise ValueError(f'{info.name} is too large to hold on the devices; set '
                       '--config.input_on_device=False.')
    self._mesh = mesh
    self._seed = seed
    self.num_devices = num_devices = mesh.devices.size
    self.per_device = info.num_train // num_devices
    self.batch_per_device = global_batch_size // num_devices
    if self.per_device < self.batch_per_device:
      raise ValueError(f'{info.num_train} training examples over {num_devices} devices leave '
                       f'{self.per_device} per device, fewer than its batch of '
                       f'{self.batch_per_device}.')
    self.steps_per_epoch = self.per_device // self.batch_per_device
    self._sharding = NamedSharding(mesh, P('data'))
    total = num_devices * self.per_device

    def rows(index) -> range:
      return range(*index[0].indices(total))

    # This host reads only the rows its own devices hold.
    held = [rows(index) for index in
            self._sharding.addressable_devices_indices_map((total,)).values()]
    first = min(r.start for r in held)
    source = datasets.open_split(info.name, data_dir, info.train_split, first,
                                 max(r.stop for r in held))

    def local(array):
      return lambda index: array[rows(index).start - first:rows(index).stop - first]

    self.images = jax.make_array_from_callback((total,) + source.images.shape[1:],
                                               self._sharding, local(source.images))
    self.labels = jax.make_array_from_callback((total,), self._sharding, local(source.labels))
    self._permutations = (None, {})

  def _permutation(self, epoch: int, device_position: int) -> np.ndarray:
    cached_epoch, by_device = self._permutations
    if cached_epoch != epoch:
      by_device = {}
      self._permutations = (epoch, by_device)
    if device_position not in by_device:
      rng = np.random.default_rng([self._seed, epoch, device_position])
      by_device[device_position] = rng.permutation(self.per_device).astype(np.int32)
    return by_device[device_position]

  def inputs(self, step: int) -> dict[str, Any]:
    """What the step needs to form batch `step` on the devices: shard-local indices and data."""
    epoch, position = divmod(step, self.steps_per_epoch)
    b = self.batch_per_device

    def local_indices(index):
      device_position = (index[0].start or 0) // b
      return self._permutation(epoch, device_position)[position * b:(position + 1) * b]

    indices = jax.make_array_from_callback((b * self._mesh.devices.size,), self._sharding,
                                           local_indices)
    return {'index': indices, 'step': np.int32(step), 'images': self.images,
            'labels': self.labels}

  @functools.cached_property
  def make_batch(self):
    """inputs -> {'image': uint8 [B, 32, 32, 3], 'label'}, traced inside the train step."""

    def local(index, step, images, labels):
      key = jax.random.fold_in(jax.random.fold_in(jax.random.key(self._seed), step),
                               jax.lax.axis_index('data'))
      offset_key, flip_key = jax.random.split(key)
      offsets = jax.random.randint(offset_key, (2, index.shape[0]), 0,
                                   2 * transforms.CIFAR_PAD + 1)
      flip = jax.random.bernoulli(flip_key, 0.5, index.shape)
      image = transforms.crop_and_flip(images[index], offsets[0], offsets[1], flip, xp=jnp)
      return image, labels[index]

    sharded = jax.shard_map(local, mesh=self._mesh,
                            in_specs=(P('data'), P(), P('data'), P('data')),
                            out_specs=(P('data'), P('data')))

    def make_batch(inputs):
      image, label = sharded(inputs['index'], inputs['step'], inputs['images'],
                             inputs['labels'])
      return {'image': image, 'label': label}

    return make_batch
