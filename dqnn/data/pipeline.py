"""Sharded, multi-host grain input pipelines yielding uint8 numpy batches.

Each host (JAX process) reads a disjoint contiguous slice of the split: host i of P reads
examples [n*i//P, n*(i+1)//P). Batches are per-host: `global_batch_size // P` examples, images
uint8 (the train step standardises them on the device).

* `train_dataset`: an infinite grain dataset whose elements are whole batches. Batch k is a pure
  function of (seed, host, k): `ShuffledBatches` gives its examples (epoch after epoch, each a new
  permutation of the host's slice), and grain seeds its augmentation generator by k. The
  iterator's `get_state()` is saved with each checkpoint, so a resumed run continues with
  exactly the next batch. In-memory (CIFAR) datasets are held decoded and augmented a whole
  batch at a time; ImageNet JPEGs are read a batch at a time and decoded, cropped and flipped
  straight into the batch's array.
* `eval_batches`: finite; every eval example is yielded exactly once across all hosts. The tail
  is padded with masked (`mask=False`) zero examples, never dropped, and all hosts yield the
  same number of batches.
* `fake_batches`: synthetic batches, no dataset needed.

Batches are made by threads, one batch per thread (the JPEG decoder and OpenCV release the GIL),
one per core available to this process, and by `num_workers` processes when > 0, which share the
cores (`threads_per_process`; docs/results.md measures the choice) and hand their batches over
through shared memory each allocates once (`handoff`).
"""

from __future__ import annotations

import functools
import math
import os
import sys
from typing import Any, Callable, Iterator

from absl import flags
import grain
import numpy as np

from dqnn.data import datasets
from dqnn.data import handoff
from dqnn.data import specs
from dqnn.data import transforms


def process_layout(process_index: int | None, process_count: int | None) -> tuple[int, int]:
  if process_index is None or process_count is None:
    import jax  # pylint: disable=g-import-not-at-top
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
  if not 0 <= process_index < process_count:
    raise ValueError(f'process_index={process_index} not in [0, {process_count}).')
  return int(process_index), int(process_count)


def local_batch_size(global_batch_size: int, process_count: int) -> int:
  if global_batch_size <= 0 or global_batch_size % process_count:
    raise ValueError(f'global_batch_size={global_batch_size} must be a positive '
                     f'multiple of process_count={process_count}.')
  return global_batch_size // process_count


def host_slice(num_examples: int, process_index: int, process_count: int) -> tuple[int, int]:
  """[start, end) of this host's examples (the same partition as tfds.even_splits)."""
  return (num_examples * process_index // process_count,
          num_examples * (process_index + 1) // process_count)


def _host_seed(seed: int, process_index: int) -> int:
  return int(np.random.SeedSequence([int(seed), int(process_index)]).generate_state(1)[0])


def threads_per_process(num_workers: int) -> int:
  """Batch-making threads in each pipeline process: one per core available to this process,
  shared among `num_workers` worker processes; none where a worker gets a single core, which
  then makes its batches in its own loop (13% more images per CPU-second than handing them over
  from one thread, docs/results.md)."""
  cores = len(os.sched_getaffinity(0))
  if num_workers == 0:
    return cores
  per_worker = cores // num_workers
  return per_worker if per_worker > 1 else 0


class ShuffledBatches:
  """Batch k of an endless run of epochs over `num_examples`: the example indices it holds.

  Epoch e is a permutation of the examples drawn from (seed, e); its batches are its first
  `num_examples // batch_size` whole batches (the remainder, other examples each epoch, waits for
  a later epoch). A grain random-access source of index arrays. One numpy permutation per epoch
  costs ~20 ns an example, where grain's own `shuffle` costs 4-5 us an element on an ImageNet
  host's slice and ~150 us on a split of a few hundred (measured, docs/results.md).
  """

  def __init__(self, num_examples: int, batch_size: int, seed: int):
    if num_examples < batch_size:
      raise ValueError(f'{num_examples} examples are fewer than one batch of {batch_size}.')
    self._num_examples, self._batch_size, self._seed = num_examples, batch_size, seed
    self.batches_per_epoch = num_examples // batch_size
    self._epoch = (-1, np.empty(0, np.int64))  # One tuple: threads read it whole.

  def __len__(self) -> int:
    return sys.maxsize

  def __getitem__(self, k: int) -> np.ndarray:
    epoch, position = divmod(int(k), self.batches_per_epoch)
    cached, permutation = self._epoch
    if cached != epoch:
      permutation = np.random.default_rng([self._seed, epoch]).permutation(self._num_examples)
      self._epoch = (epoch, permutation)
    return permutation[position * self._batch_size:(position + 1) * self._batch_size]


def _small_train_batch(indices: np.ndarray, rng: np.random.Generator, *, source,
                       image_size: int) -> dict[str, np.ndarray]:
  images = transforms.cifar_train_batch(source.images[indices], rng)
  if image_size != images.shape[1]:
    images = np.stack([transforms.resize_square(im, image_size) for im in images])
  return {'image': images, 'label': source.labels[indices]}


def decode_example(transform, example: dict, *args):
  """`transform(example['image'], *args)`; an unreadable image is one error naming its file."""
  try:
    return transform(example['image'], *args)
  except transforms.UnreadableImageError as e:
    name = example.get('file_name', b'<no file_name>')
    name = name.decode() if isinstance(name, bytes) else name
    raise transforms.UnreadableImageError(
        f'{name}: {e}; prepare the dataset again without it.') from None


def imagenet_train_batch(examples: list[dict], rng: np.random.Generator, *, image_size: int,
                         decoder: str | None = None) -> dict[str, np.ndarray]:
  """Random-resized crops and flips of a batch of JPEG examples, drawn from `rng` in order and
  written straight into the batch's array."""
  images = np.empty((len(examples), image_size, image_size, 3), np.uint8)
  for row, example in enumerate(examples):
    decode_example(transforms.imagenet_train, example, rng, image_size, decoder, images[row])
  return {'image': images, 'label': np.array([e['label'] for e in examples], np.int32)}


def _read_batch(indices: np.ndarray, rng: np.random.Generator, *, source,
                make_batch: Callable[[list[dict], np.random.Generator], Any]):
  # One read at a time: the source's batched read (`__getitems__`) starts reader threads that
  # cost more CPU than they save (measured, docs/results.md).
  return make_batch([source[i] for i in indices.tolist()], rng)


def train_dataset(info: datasets.DatasetInfo, data_dir: str | None, *, global_batch_size: int,
                  seed: int, image_size: int | None = None, process_index: int | None = None,
                  process_count: int | None = None, num_workers: int = 0,
                  decoder: str | None = None) -> grain.IterDataset:
  """Infinite shuffled, augmented training batches for this host.

  `decoder`: the JPEG decoder of ImageNet-style data (`transforms.DECODERS`, default
  `transforms.default_decoder()`).

  Iterating yields {'image': uint8 [global_batch_size // process_count, S, S, 3],
                    'label': int32 [global_batch_size // process_count]}.
  """
  image_size = image_size or info.image_size
  if datasets.spec(info.name).augmentation == specs.CIFAR_AUGMENTATION:
    source, batches = _host_train_batches(info, data_dir, global_batch_size, seed,
                                          process_index, process_count)
    ds = batches.random_map(functools.partial(_small_train_batch, source=source,
                                              image_size=image_size))
  else:
    ds = jpeg_train_batches(
        info, data_dir, functools.partial(imagenet_train_batch, image_size=image_size,
                                          decoder=decoder),
        global_batch_size=global_batch_size, seed=seed, process_index=process_index,
        process_count=process_count)
  return _prefetched(ds, num_workers)


def _host_train_batches(info: datasets.DatasetInfo, data_dir: str | None,
                        global_batch_size: int, seed: int, process_index: int | None,
                        process_count: int | None) -> tuple[Any, grain.MapDataset]:
  """(this host's training examples, its `ShuffledBatches` as a seeded grain dataset)."""
  process_index, process_count = process_layout(process_index, process_count)
  batch = local_batch_size(global_batch_size, process_count)
  start, end = host_slice(info.num_train, process_index, process_count)
  if end - start < batch:
    raise ValueError(f'Host {process_index} holds {end - start} training examples, fewer than '
                     f'its batch of {batch}.')
  source = datasets.open_split(info.name, data_dir, info.train_split, start, end)
  host_seed = _host_seed(seed, process_index)
  return source, grain.MapDataset.source(ShuffledBatches(len(source), batch, host_seed)).seed(
      host_seed)


def jpeg_train_batches(info: datasets.DatasetInfo, data_dir: str | None,
                       make_batch: Callable[[list[dict], np.random.Generator], Any], *,
                       global_batch_size: int, seed: int, process_index: int | None = None,
                       process_count: int | None = None) -> grain.MapDataset:
  """This host's infinite JPEG training batches: element k is `make_batch(examples, rng)`.

  Batch k's examples and generator are a pure function of (seed, host, k). Every JPEG input
  (grain's, DALI's) draws from this one order.
  """
  source, batches = _host_train_batches(info, data_dir, global_batch_size, seed, process_index,
                                        process_count)
  return batches.random_map(functools.partial(_read_batch, source=source, make_batch=make_batch))


def _prefetched(ds: grain.MapDataset, num_workers: int) -> grain.IterDataset:
  """`ds` made ahead by threads, and by `num_workers` processes when > 0 (their batches handed
  over through each worker's reused shared memory, not grain's block per array)."""
  threads = threads_per_process(num_workers)
  ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=threads,
                                            prefetch_buffer_size=max(threads, 1)))
  if num_workers > 0:
    if not flags.FLAGS.is_parsed():  # grain's workers read absl flags; a library caller has none.
      flags.FLAGS.mark_as_parsed()
    ds = ds.map(handoff.worker_side()).mp_prefetch(
        grain.MultiprocessingOptions(num_workers=num_workers)).map(handoff.training_side())
  return ds


def _eval_batch(k: int, *, source, batch: int, small: bool, image_size: int,
                decoder: str | None) -> dict[str, np.ndarray]:
  """Eval batch k: examples [k * batch, (k + 1) * batch), zero-padded past the split's end."""
  indices = list(range(k * batch, min((k + 1) * batch, len(source))))
  images = np.zeros((batch, image_size, image_size, 3), np.uint8)
  labels = np.zeros(batch, np.int32)
  if small:  # Decoded arrays.
    for row, i in enumerate(indices):
      images[row] = transforms.resize_square(source.images[i], image_size)
    labels[:len(indices)] = source.labels[indices]
  else:
    for row, example in enumerate(source[i] for i in indices):
      decode_example(transforms.imagenet_eval, example, image_size, decoder, images[row])
      labels[row] = example['label']
  return {'image': images, 'label': labels, 'mask': np.arange(batch) < len(indices)}


def eval_batches(info: datasets.DatasetInfo, data_dir: str | None, *, global_batch_size: int,
                 image_size: int | None = None, process_index: int | None = None,
                 process_count: int | None = None, num_workers: int = 0,
                 decoder: str | None = None) -> Iterator[dict[str, np.ndarray]]:
  """Finite eval batches; each eval example appears exactly once over all hosts.

  Yields {'image': uint8 [B, S, S, 3], 'label': int32 [B], 'mask': bool [B]} with
  B = global_batch_size // process_count. Padding examples (zeros, label 0) have mask False.
  Every host yields ceil(ceil(n / P) / B) batches.
  """
  image_size = image_size or info.image_size
  process_index, process_count = process_layout(process_index, process_count)
  batch = local_batch_size(global_batch_size, process_count)
  n = info.num_eval
  start, end = host_slice(n, process_index, process_count)
  num_batches = math.ceil(math.ceil(n / process_count) / batch)
  source = datasets.open_split(info.name, data_dir, info.eval_split, start, end)
  ds = grain.MapDataset.range(num_batches).map(functools.partial(
      _eval_batch, source=source, batch=batch, small=datasets.is_small(info.name),
      image_size=image_size, decoder=decoder))
  return iter(_prefetched(ds, num_workers))


def fake_batches(*, global_batch_size: int, image_size: int, num_classes: int, seed: int = 0,
                 process_count: int | None = None) -> Iterator[dict[str, np.ndarray]]:
  """Infinite synthetic batches (the same one repeated; for throughput runs)."""
  if process_count is None:
    import jax  # pylint: disable=g-import-not-at-top
    process_count = jax.process_count()
  batch = local_batch_size(global_batch_size, process_count)
  rng = np.random.default_rng(seed)
  fake = {'image': rng.integers(0, 256, (batch, image_size, image_size, 3), dtype=np.uint8),
          'label': rng.integers(0, num_classes, size=(batch,), dtype=np.int32)}
  while True:
    yield dict(fake)
