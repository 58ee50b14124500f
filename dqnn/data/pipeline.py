"""Sharded, multi-host tf.data input pipelines yielding numpy batches.

Each host (JAX process) reads a disjoint contiguous slice of the split:
host i of P reads examples [n*i//P, n*(i+1)//P) (the same partition as
`tfds.even_splits(split, n=P)`), expressed as an absolute TFDS slice
`'split[start:end]'`. Batches are per-host: `global_batch_size // P` examples.

* `train_iterator`: infinite, deterministic in `seed` (file order via
  `tfds.ReadConfig(shuffle_seed)`, `Dataset.shuffle(seed)`, stateless
  augmentation seeded by (seed, host, example counter)); CIFAR is cached in
  memory after decoding.
* `eval_iterator`: finite; every eval example is yielded exactly once across
  all hosts. The tail is padded with masked (`mask=False`) zero examples,
  never dropped, and all hosts yield the same number of batches.
* `fake_iterator`: synthetic batches, no dataset needed.
"""

from __future__ import annotations

import math
from typing import Iterator

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from dqnn.data import preprocess
from dqnn.data.datasets import _spec, load_builder

_IMAGENET_SHUFFLE_BUFFER = 10_000


def _process_layout(process_index, process_count):
  if process_index is None or process_count is None:
    import jax  # pylint: disable=g-import-not-at-top
    if process_index is None:
      process_index = jax.process_index()
    if process_count is None:
      process_count = jax.process_count()
  if not 0 <= process_index < process_count:
    raise ValueError(f'process_index={process_index} not in [0, {process_count}).')
  return int(process_index), int(process_count)


def _local_batch_size(global_batch_size: int, process_count: int) -> int:
  if global_batch_size <= 0 or global_batch_size % process_count:
    raise ValueError(f'global_batch_size={global_batch_size} must be a positive '
                     f'multiple of process_count={process_count}.')
  return global_batch_size // process_count


def host_slice(num_examples: int, process_index: int, process_count: int):
  """[start, end) of this host's examples (same partition as tfds.even_splits)."""
  return (num_examples * process_index // process_count,
          num_examples * (process_index + 1) // process_count)


def _tf_dtype(dtype) -> tf.DType:
  return tf.as_dtype(np.dtype(dtype).name if not isinstance(dtype, str) else dtype)


def _host_seeds(seed: int, process_index: int):
  """Three independent 31-bit seeds for (file order, shuffle, augmentation)."""
  state = np.random.SeedSequence([int(seed), int(process_index)]).generate_state(3)
  return [int(s) & 0x7FFFFFFF for s in state]


def _decoders(name):
  # ImageNet JPEGs are decoded by our own ops (decode_and_crop, channels=3).
  return {'image': tfds.decode.SkipDecoding()} if name == 'imagenet2012' else None


def _options() -> tf.data.Options:
  options = tf.data.Options()
  options.deterministic = True
  return options


def train_iterator(name: str,
                   data_dir: str | None,
                   *,
                   global_batch_size: int,
                   seed: int,
                   image_size: int | None = None,
                   dtype='float32',
                   process_index: int | None = None,
                   process_count: int | None = None,
                   download: bool = False,
                   shuffle_buffer_size: int | None = None,
                   cache: bool | None = None) -> Iterator[dict]:
  """Infinite shuffled, augmented training batches for this host.

  Yields {'image': [global_batch_size // process_count, H, W, 3] dtype,
          'label': int32 [global_batch_size // process_count]}.
  """
  spec = _spec(name)
  image_size = image_size or spec.image_size
  process_index, process_count = _process_layout(process_index, process_count)
  local_bs = _local_batch_size(global_batch_size, process_count)
  builder = load_builder(name, data_dir, download=download)
  n = builder.info.splits[spec.train_split].num_examples
  start, end = host_slice(n, process_index, process_count)
  if end <= start:
    raise ValueError(f'Host {process_index} has no training examples ({n} total).')
  file_seed, shuffle_seed, aug_seed = _host_seeds(seed, process_index)
  out_dtype = _tf_dtype(dtype)

  ds = builder.as_dataset(
      split=f'{spec.train_split}[{start}:{end}]',
      shuffle_files=True,
      decoders=_decoders(name),
      read_config=tfds.ReadConfig(shuffle_seed=file_seed, options=_options()))
  ds = ds.map(lambda x: {'image': x['image'], 'label': x['label']})
  if cache if cache is not None else name == 'cifar100':
    ds = ds.cache()
  if shuffle_buffer_size is None:
    shuffle_buffer_size = (end - start if name == 'cifar100'
                           else min(end - start, _IMAGENET_SHUFFLE_BUFFER))
  ds = ds.shuffle(shuffle_buffer_size, seed=shuffle_seed,
                  reshuffle_each_iteration=True)
  ds = ds.repeat()
  ds = ds.enumerate()

  def _map(i, x):
    ex_seed = tf.stack([tf.constant(aug_seed, tf.int64), i])
    if name == 'cifar100':
      image = preprocess.cifar_train(x['image'], ex_seed, image_size)
    else:
      image = preprocess.imagenet_train(x['image'], ex_seed, image_size)
    return {'image': preprocess.normalize(image, name, out_dtype),
            'label': tf.cast(x['label'], tf.int32)}

  ds = ds.map(_map, num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.batch(local_bs, drop_remainder=True)
  ds = ds.prefetch(tf.data.AUTOTUNE)
  return iter(tfds.as_numpy(ds))


def eval_iterator(name: str,
                  data_dir: str | None,
                  *,
                  global_batch_size: int,
                  image_size: int | None = None,
                  dtype='float32',
                  process_index: int | None = None,
                  process_count: int | None = None,
                  download: bool = False) -> Iterator[dict]:
  """Finite eval batches; each eval example appears exactly once over all hosts.

  Yields {'image': [B, H, W, 3], 'label': int32 [B], 'mask': bool [B]} with
  B = global_batch_size // process_count. Padding examples (zeros, label 0)
  have mask False. Every host yields ceil(ceil(n / P) / B) batches.
  """
  spec = _spec(name)
  image_size = image_size or spec.image_size
  process_index, process_count = _process_layout(process_index, process_count)
  local_bs = _local_batch_size(global_batch_size, process_count)
  builder = load_builder(name, data_dir, download=download)
  n = builder.info.splits[spec.eval_split].num_examples
  start, end = host_slice(n, process_index, process_count)
  num_batches = math.ceil(math.ceil(n / process_count) / local_bs)
  num_pad = num_batches * local_bs - (end - start)
  out_dtype = _tf_dtype(dtype)

  def _map(x):
    if name == 'cifar100':
      image = preprocess.cifar_eval(x['image'], image_size)
    else:
      image = preprocess.imagenet_eval(x['image'], image_size)
    return {'image': preprocess.normalize(image, name, out_dtype),
            'label': tf.cast(x['label'], tf.int32),
            'mask': tf.constant(True)}

  pad = tf.data.Dataset.from_tensors({
      'image': tf.zeros([image_size, image_size, 3], out_dtype),
      'label': tf.constant(0, tf.int32),
      'mask': tf.constant(False)}).repeat(num_pad)
  if end > start:
    ds = builder.as_dataset(
        split=f'{spec.eval_split}[{start}:{end}]',
        shuffle_files=False,
        decoders=_decoders(name),
        read_config=tfds.ReadConfig(options=_options()))
    ds = ds.map(_map, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.concatenate(pad)
  else:
    ds = pad
  ds = ds.batch(local_bs, drop_remainder=True)
  ds = ds.prefetch(tf.data.AUTOTUNE)
  return iter(tfds.as_numpy(ds))


def fake_iterator(*,
                  global_batch_size: int,
                  image_size: int,
                  num_classes: int,
                  seed: int = 0,
                  process_count: int | None = None,
                  dtype='float32') -> Iterator[dict]:
  """Infinite synthetic batches (same one repeated; for throughput runs)."""
  if process_count is None:
    import jax  # pylint: disable=g-import-not-at-top
    process_count = jax.process_count()
  local_bs = _local_batch_size(global_batch_size, process_count)
  rng = np.random.default_rng(seed)
  batch = {
      'image': rng.standard_normal(
          (local_bs, image_size, image_size, 3), dtype=np.float32).astype(
              _tf_dtype(dtype).as_numpy_dtype),
      'label': rng.integers(0, num_classes, size=(local_bs,), dtype=np.int32),
  }
  while True:
    yield dict(batch)
