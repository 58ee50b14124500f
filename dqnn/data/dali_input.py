"""Training batches decoded by NVIDIA DALI (the optional `dali` extra), drawn by dqnn.

dqnn draws the sample order and every crop window and flip with the grain path's own sampler
(`pipeline.jpeg_train_batches`, `transforms.random_crop_window`), so batch k holds the same
examples cropped to the same windows as the grain path's batch k. DALI only decodes the window
(`fn.decoders.image_slice`: nvJPEG with device='mixed' on a GPU, 'cpu' in CPU-only mode),
resizes it to the image size (bilinear, antialiased, as the Pillow reference) and mirrors it.
One DALI pipeline per local device decodes that device's rows of this process's batch; the
per-device outputs form the global batch with the run's batch sharding.

The position is the next batch's index, `{'next_index': k}` as grain's iterator reports it, so
a resumed run continues with exactly the batches a run that never stopped would draw.
Training only: evaluation stays on the grain path. DALI is imported when a `DaliInput` is built,
never at module import.
"""
from __future__ import annotations

import os
from typing import Any

import grain
import jax
from jax.sharding import NamedSharding
import numpy as np

from dqnn.data import datasets
from dqnn.data import pipeline
from dqnn.data import transforms

MISSING_DALI = ("NVIDIA DALI is not installed: pip install -e '.[dali]' (needs a CUDA 12 GPU "
                'host) or use --config.input_backend=grain')
# Batches whose examples are read and windows drawn ahead of the step, each by a grain thread
# (a header read per image: cheap next to DALI's decode).
_READ_AHEAD = 2


class DaliNotInstalledError(ImportError):
  """`input_backend='dali'` on a host without NVIDIA DALI."""


def import_dali():
  """The `nvidia.dali` package, or `DaliNotInstalledError` naming the fix."""
  try:
    import nvidia.dali  # pylint: disable=g-import-not-at-top
    import nvidia.dali.fn  # pylint: disable=g-import-not-at-top,unused-import
    import nvidia.dali.types  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError:
    raise DaliNotInstalledError(MISSING_DALI) from None
  return nvidia.dali


def crop_requests(examples: list[dict], rng: np.random.Generator) -> dict[str, list]:
  """What DALI is fed for a batch: each example's JPEG bytes, crop window and flip, drawn from
  `rng` in order as `pipeline.imagenet_train_batch` draws them."""
  requests = {'jpeg': [], 'anchor': [], 'shape': [], 'flip': [], 'label': []}
  for example in examples:
    width, height = pipeline.decode_example(transforms.image_dimensions, example)
    left, top, w, h, flip = transforms.random_crop_window(width, height, rng)
    requests['jpeg'].append(np.frombuffer(example['image'], np.uint8))
    requests['anchor'].append(np.array([left, top], np.int32))
    requests['shape'].append(np.array([w, h], np.int32))
    requests['flip'].append(np.int32(flip))
    requests['label'].append(np.int32(example['label']))
  return requests


def _crop_pipeline(dali, *, batch_size: int, image_size: int, num_threads: int,
                   device_id: int | None):
  """A DALI pipeline fed by `feed_input` (one batch per run): decode window, resize, flip.

  Nothing in it is random (dqnn drew the windows and flips) and it runs one fed batch at a time
  (not pipelined), so its output is a pure function of what it was fed.
  """
  fn, types = dali.fn, dali.types
  on_gpu = device_id is not None

  @dali.pipeline_def(batch_size=batch_size, num_threads=num_threads, device_id=device_id,
                     prefetch_queue_depth=1, exec_pipelined=False)
  def crop():
    jpegs = fn.external_source(name='jpeg')
    anchors = fn.external_source(name='anchor')
    shapes = fn.external_source(name='shape')
    flips = fn.external_source(name='flip')
    # Absolute (x, y) windows; EXIF orientation is ignored, as the grain path's decoders do.
    images = fn.decoders.image_slice(
        jpegs, anchors, shapes, device='mixed' if on_gpu else 'cpu', output_type=types.RGB,
        normalized_anchor=False, normalized_shape=False, adjust_orientation=False)
    images = fn.resize(images, size=[image_size, image_size], interp_type=types.INTERP_LINEAR,
                       antialias=True)
    return fn.flip(images, horizontal=flips)

  pipe = crop()
  pipe.build()
  return pipe


def _device_rows(sharding: NamedSharding, global_batch_size: int,
                 local_batch: int) -> list[tuple[jax.Device, int, int]]:
  """(device, start, stop) of the rows of this process's batch each local device holds."""
  indices = sharding.addressable_devices_indices_map((global_batch_size,))
  rows = {device: index[0].indices(global_batch_size)[:2] for device, index in indices.items()}
  offset = min(start for start, _ in rows.values())
  if max(stop for _, stop in rows.values()) - offset != local_batch:
    raise ValueError(f'The batch sharding gives this process rows other than its {local_batch} '
                     'examples; shard the batch over the data axis only.')
  return [(device, start - offset, stop - offset)
          for device, (start, stop) in sorted(rows.items(), key=lambda item: item[1])]


class DaliInput:
  """Training batches decoded by DALI, with `training_input`'s interface (`next`, `make_batch`,
  `get_state` / `set_state`, `steps_per_epoch`)."""

  def __init__(self, info: datasets.DatasetInfo, data_dir: str | None, sharding: NamedSharding,
               *, global_batch_size: int, seed: int, image_size: int | None = None,
               num_threads: int | None = None, process_index: int | None = None,
               process_count: int | None = None):
    dali = import_dali()
    self._image_size = image_size or info.image_size
    process_index, process_count = pipeline.process_layout(process_index, process_count)
    local_batch = pipeline.local_batch_size(global_batch_size, process_count)
    requests = pipeline.jpeg_train_batches(
        info, data_dir, crop_requests, global_batch_size=global_batch_size, seed=seed,
        process_index=process_index, process_count=process_count)
    self._requests = iter(requests.to_iter_dataset(grain.ReadOptions(
        num_threads=_READ_AHEAD, prefetch_buffer_size=_READ_AHEAD)))
    self._sharding = sharding
    self._global_batch_size = global_batch_size
    self._rows = _device_rows(sharding, global_batch_size, local_batch)
    num_threads = num_threads or max(1, (os.cpu_count() or 1) // len(self._rows))
    # DALI's CPU-only mode where the devices are not GPUs (its own device id is then None).
    self._pipes = [_crop_pipeline(
        dali, batch_size=stop - start, image_size=self._image_size, num_threads=num_threads,
        device_id=device.local_hardware_id if device.platform == 'gpu' else None)
        for device, start, stop in self._rows]
    self.steps_per_epoch = info.num_train // global_batch_size

  def next(self) -> dict[str, jax.Array]:
    requests = next(self._requests)
    for pipe, (_, start, stop) in zip(self._pipes, self._rows):
      for name in ('jpeg', 'anchor', 'shape', 'flip'):
        pipe.feed_input(name, requests[name][start:stop])
      pipe.schedule_run()  # The devices' pipelines decode at the same time.
    images = [_on_device(pipe.outputs()[0].as_tensor(), device)
              for pipe, (device, _, _) in zip(self._pipes, self._rows)]
    labels = [jax.device_put(np.array(requests['label'][start:stop]), device)
              for device, start, stop in self._rows]
    size = self._image_size
    return {'image': jax.make_array_from_single_device_arrays(
                (self._global_batch_size, size, size, 3), self._sharding, images),
            'label': jax.make_array_from_single_device_arrays(
                (self._global_batch_size,), self._sharding, labels)}

  @staticmethod
  def make_batch(inputs: dict[str, jax.Array]) -> dict[str, jax.Array]:
    return inputs

  def get_state(self) -> dict[str, Any]:
    return self._requests.get_state()

  def set_state(self, state: dict[str, Any]) -> None:
    if 'next_index' not in state:
      raise ValueError(f'Input state {state} holds no next_index; the DALI input resumes from a '
                       'grain or DALI run without input processes (input_workers=0).')
    self._requests.set_state({'next_index': int(state['next_index'])})


def _on_device(tensor, device: jax.Device) -> jax.Array:
  """A DALI output tensor as a jax array on `device` (a copy: DALI reuses its buffers)."""
  if device.platform == 'gpu':
    return jax.device_put(jax.dlpack.from_dlpack(tensor), device).copy()
  return jax.device_put(np.array(tensor), device)
