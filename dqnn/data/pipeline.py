"""Sharded, multi-host grain input pipelines yielding uint8 numpy batches.

Each host (JAX process) reads a disjoint contiguous slice of the split: host i of P reads
examples [n*i//P, n*(i+1)//P). Batches are per-host: `global_batch_size // P` examples, images
uint8 (the train step standardises them on the device).

* `train_dataset`: an infinite grain dataset. Batch k of it is a pure function of
  (seed, host, k): grain shuffles by index, with a new permutation each epoch, and draws each
  batch's augmentation from a generator seeded by its index. Its iterator's `get_state()` is
  saved with each checkpoint, so a resumed run continues with exactly the next batch.
  In-memory (CIFAR) datasets are held decoded and augmented a whole batch at a time; ImageNet
  JPEGs are decoded, cropped and flipped per image, by `num_workers` processes when > 0.
* `eval_batches`: finite; every eval example is yielded exactly once across all hosts. The tail
  is padded with masked (`mask=False`) zero examples, never dropped, and all hosts yield the
  same number of batches.
* `fake_batches`: synthetic batches, no dataset needed.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, Iterator

from absl import flags
import grain
import numpy as np

from dqnn.data import datasets
from dqnn.data import specs
from dqnn.data import transforms

# Threads that read and transform examples ahead of the step, per process (more lose to the GIL:
# measured 4 vs 16 threads on the ImageNet sample, docs/results.md).
_READ_THREADS = 4
PREFETCH = 256


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


def _read_options() -> grain.ReadOptions:
  return grain.ReadOptions(num_threads=_READ_THREADS, prefetch_buffer_size=PREFETCH)


def _small_train_batch(indices: np.ndarray, rng: np.random.Generator, *, source,
                       image_size: int) -> dict[str, np.ndarray]:
  images = transforms.cifar_train_batch(source.images[indices], rng)
  if image_size != images.shape[1]:
    images = np.stack([transforms.resize_square(im, image_size) for im in images])
  return {'image': images, 'label': source.labels[indices]}


def _decode(transform, example: dict, *args):
  """`transform(example['image'], *args)`; an unreadable image is one error naming its file."""
  try:
    return transform(example['image'], *args)
  except transforms.UnreadableImageError as e:
    name = example.get('file_name', b'<no file_name>')
    name = name.decode() if isinstance(name, bytes) else name
    raise transforms.UnreadableImageError(
        f'{name}: {e}; prepare the dataset again without it.') from None


def _imagenet_train_example(example: dict, rng: np.random.Generator, *, image_size: int,
                            decoder: str | None) -> dict[str, np.ndarray]:
  return {'image': _decode(transforms.imagenet_train, example, rng, image_size, decoder),
          'label': np.int32(example['label'])}


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
    source, batch, host_seed = _host_train_split(info, data_dir, global_batch_size, seed,
                                                 process_index, process_count)
    ds = (grain.MapDataset.range(len(source)).seed(host_seed).shuffle().repeat()
          .batch(batch, drop_remainder=True)
          .random_map(functools.partial(_small_train_batch, source=source,
                                        image_size=image_size)))
  else:
    examples, batch = jpeg_train_examples(
        info, data_dir, functools.partial(_imagenet_train_example, image_size=image_size,
                                          decoder=decoder),
        global_batch_size=global_batch_size, seed=seed, process_index=process_index,
        process_count=process_count)
    ds = examples.batch(batch, drop_remainder=True)
  return _prefetched(ds, num_workers)


def _host_train_split(info: datasets.DatasetInfo, data_dir: str | None, global_batch_size: int,
                      seed: int, process_index: int | None, process_count: int | None):
  """(this host's training examples, its batch size, its seed)."""
  process_index, process_count = process_layout(process_index, process_count)
  batch = local_batch_size(global_batch_size, process_count)
  start, end = host_slice(info.num_train, process_index, process_count)
  if end - start < batch:
    raise ValueError(f'Host {process_index} holds {end - start} training examples, fewer than '
                     f'its batch of {batch}.')
  source = datasets.open_split(info.name, data_dir, info.train_split, start, end)
  return source, batch, _host_seed(seed, process_index)


def jpeg_train_examples(info: datasets.DatasetInfo, data_dir: str | None,
                        augment: Callable[[dict, np.random.Generator], Any], *,
                        global_batch_size: int, seed: int, process_index: int | None = None,
                        process_count: int | None = None) -> tuple[grain.MapDataset, int]:
  """This host's infinite shuffled JPEG examples, each `augment(example, rng)`, and its batch.

  Element i is a pure function of (seed, host, i): grain shuffles by index, with a new
  permutation each epoch, and seeds element i's generator by i. Batch k is elements
  [k * batch, (k + 1) * batch). Every JPEG input (grain's, DALI's) draws from this one order.
  """
  source, batch, host_seed = _host_train_split(info, data_dir, global_batch_size, seed,
                                               process_index, process_count)
  return grain.MapDataset.source(source).seed(host_seed).shuffle().repeat().random_map(
      augment), batch


def _prefetched(ds: grain.MapDataset, num_workers: int) -> grain.IterDataset:
  """`ds` read ahead by threads, and by `num_workers` processes when > 0."""
  ds = ds.to_iter_dataset(_read_options())
  if num_workers > 0:
    if not flags.FLAGS.is_parsed():  # grain's workers read absl flags; a library caller has none.
      flags.FLAGS.mark_as_parsed()
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))
  return ds


def _eval_example(index: int, *, source, name: str, image_size: int,
                  decoder: str | None) -> dict[str, np.ndarray]:
  if index >= len(source):  # Padding up to whole batches.
    return {'image': np.zeros((image_size, image_size, 3), np.uint8),
            'label': np.int32(0), 'mask': np.False_}
  example = source[index]
  if datasets.spec(name).augmentation == specs.CIFAR_AUGMENTATION:  # Decoded arrays.
    image = transforms.resize_square(example['image'], image_size)
  else:
    image = _decode(transforms.imagenet_eval, example, image_size, decoder)
  return {'image': image, 'label': np.int32(example['label']), 'mask': np.True_}


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
  ds = (grain.MapDataset.range(num_batches * batch)
        .map(functools.partial(_eval_example, source=source, name=info.name,
                               image_size=image_size, decoder=decoder))
        .batch(batch))
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
