"""Input throughput, side by side in one run: ImageNet decode per CPU core, and CIFAR fed on-device.

    python benchmarks/input_pipeline.py --imagenet_folder=../shared/data/imagenet_sample \
        [--cifar_data_dir=$TFDS_DATA_DIR] [--steps=10] [--workers=0] [--rounds=3] [--dali] \
        [--resized_quality=95]

1. ImageNet training images (read + decode + random-resized crop to 224 + flip + batch) for the
   previous path, kept here as the reference (dqnn's pipeline before the lean one: grain
   shuffling and mapping example by example, Pillow's decode and antialiased resize, batches
   stacked, 4 threads and 256 prefetched examples per process), and the new one
   (`pipeline.train_dataset`: whole batches per thread, libjpeg-turbo through simplejpeg + one
   OpenCV warp where installed, written into the batch; worker processes hand batches over
   through shared memory each allocates once), on the original JPEGs and on JPEGs
   stored with `prepare --max_short_side=256 --jpeg_quality=Q` (Q = `--resized_quality`,
   prepare's default unless given). Both read the prepared sample as an
   ImageNet-sized split (record i % n of 1,281,167): indexing and shuffling then cost what they
   cost on ImageNet (grain's shuffle costs ~150 us an element on a 176-example split, 4-5 us on
   ImageNet's), while every image decoded is a real one.
   - per stage, CPU microseconds per image in one thread (record read, decode, crop/resize +
     flip, batch assembly, host->device), the pipeline's own machinery (end to end in threads
     minus its stages) and the worker hand-off (end to end with `--workers` processes minus
     threads);
   - end to end: img/s, images per CPU-second of the whole process tree (what one fully used core
     delivers; it does not depend on other load on the host) and the cores one H200 needs at
     17,600 img/s, in threads only and, with `--workers` > 0, with that many processes; the
     median of `--rounds` rounds that alternate between the paths;
   - handing a batch from a worker process to the trainer: through a new shared-memory block
     per batch (grain's `mp_prefetch`) and through `handoff`'s reused ring, CPU us an image;
   - resized storage by JPEG quality (95, 90, 85; `prepare --jpeg_quality`): KB an image, the new
     path's decode, PSNR against the resized image before compression;
   - the tf.data ops dqnn used before grain (TensorFlow's decode_and_crop_jpeg; needs the `[tf]`
     extra, skipped without it), from encoded bytes in memory.
   - with `--dali` (NVIDIA DALI installed): dqnn's DALI input (`input_backend='dali'`), the
     same examples, windows and flips, decoded by DALI: on a GPU host nvJPEG ('mixed'), else
     DALI's CPU-only mode, labelled so; the global batch built on the devices, as training gets it.
   The last line printed is one JSON object of the end-to-end images per CPU-second at
   `--workers` (medians): {"original": N, "resized": N, "previous_original": N,
   "previous_resized": N}, plus "dali_original" and "dali_resized" with `--dali`.
2. CIFAR-100 (`--cifar_data_dir` holding a prepared cifar100, else the embedded sample): the DQ
   W2A2 ResNet-20 train step at batch 128 fed by the host pipeline vs. by the on-device input
   (`input_on_device`): median wall time of `--steps` timed steps, and images per CPU-second of
   the process (pipeline threads included).
"""
import argparse
import contextlib
import dataclasses
import importlib
import importlib.metadata
import io
import json
import math
import os
import statistics
import sys
import tempfile
import time
import unittest.mock
from multiprocessing import shared_memory

from absl import flags
import grain
import jax
import numpy as np
import psutil
from jax.sharding import Mesh, NamedSharding, PartitionSpec

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# pylint: disable=g-import-not-at-top,wrong-import-position
from configs import base
from dqnn import data
from dqnn import run_builder
from dqnn import runs
from dqnn import train
from dqnn.data import dali_input
from dqnn.data import datasets
from dqnn.data import handoff
from dqnn.data import pipeline
from dqnn.data import prepare
from dqnn.data import transforms
import tensorflow_datasets as tfds
# pylint: enable=g-import-not-at-top,wrong-import-position

IMAGE_SIZE = 224
H200_IMAGES_PER_S = 17_600  # Float ResNet-18 training on one H200 (bf16, batch 256).


def tf_data_rate(jpegs: list[bytes], batch: int, batches: int) -> tuple[float, float] | None:
  """img/s of the previous tf.data ImageNet training ops, AUTOTUNE over every core."""
  try:
    import tensorflow as tf
  except ImportError:
    return None
  tf.config.set_visible_devices([], 'GPU')

  def crop(encoded, seed):
    shape = tf.image.extract_jpeg_shape(encoded)
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        shape, bounding_boxes=tf.constant([0.0, 0.0, 1.0, 1.0], tf.float32, [1, 1, 4]),
        seed=seed, min_object_covered=0.1, aspect_ratio_range=(3 / 4, 4 / 3),
        area_range=(0.08, 1.0), max_attempts=10, use_image_if_no_bounding_boxes=True)
    window = tf.stack([begin[0], begin[1], size[0], size[1]])
    image = tf.image.decode_and_crop_jpeg(encoded, window, channels=3)
    image = tf.image.resize(image, [IMAGE_SIZE, IMAGE_SIZE], method='bilinear')
    return tf.cast(tf.image.stateless_random_flip_left_right(image, seed=seed), tf.uint8)

  ds = tf.data.Dataset.from_tensor_slices(jpegs).repeat().enumerate()
  ds = ds.map(lambda i, x: crop(x, tf.stack([tf.constant(0, tf.int64), i])),
              num_parallel_calls=tf.data.AUTOTUNE).batch(batch).prefetch(tf.data.AUTOTUNE)
  return _rate(iter(ds.as_numpy_iterator()), batch, batches)


def _cpu_seconds() -> float:
  """CPU time of this process and its live children (grain's workers), all threads."""
  processes = [psutil.Process()]
  processes += processes[0].children(recursive=True)
  total = 0.0
  for process in processes:
    try:
      times = process.cpu_times()
      total += times.user + times.system
    except psutil.NoSuchProcess:
      pass
  return total


def _cpu_seconds_since(cpu_start: float) -> float:
  # CPU time is counted in clock ticks: a stretch shorter than one reads 0, so count at least one.
  return max(_cpu_seconds() - cpu_start, 1 / os.sysconf('SC_CLK_TCK'))


def _rate(batches_iter, batch: int, batches: int,
          buffered: int = 0) -> tuple[float, float]:
  """(img/s wall, img per CPU-second): the second does not depend on what else the host runs.

  The first batches (worker start, and the `buffered` images a pipeline computes ahead of its
  consumer) are drained untimed, so the timed ones measure production, not the buffer.
  """
  for _ in range(2 + -(-buffered // batch)):
    next(batches_iter)
  start, cpu_start = time.perf_counter(), _cpu_seconds()
  for _ in range(batches):
    next(batches_iter)
  images = batches * batch
  return images / (time.perf_counter() - start), images / _cpu_seconds_since(cpu_start)


IMAGENET_TRAIN_EXAMPLES = 1_281_167


class ImageNetSizedSplit:
  """A prepared split's records repeated to `length` examples (record i % n)."""

  def __init__(self, source, length: int):
    self._source, self._length = source, length

  def __len__(self) -> int:
    return self._length

  def __getitem__(self, index: int) -> dict:
    return self._source[index % len(self._source)]

  def __getitems__(self, indices: list[int]) -> list[dict]:
    return self._source.__getitems__([i % len(self._source) for i in indices])


@contextlib.contextmanager
def imagenet_sized(data_dir: str):
  """The prepared training split at `data_dir` read as ImageNet's (`ImageNetSizedSplit`)."""
  info = data.get_dataset_info('imagenet2012', data_dir)
  real = datasets.open_split(info.name, data_dir, info.train_split, 0, info.num_train)
  sized = lambda name, data_dir, split, start, end: ImageNetSizedSplit(real, end - start)
  with unittest.mock.patch.object(datasets, 'open_split', sized):
    yield dataclasses.replace(info, num_train=IMAGENET_TRAIN_EXAMPLES)


def previous_source(data_dir: str):
  """The training split as the previous pipeline read it: TFDS's data source, which parses
  each record through the dataset's feature spec."""
  return tfds.data_source('imagenet2012', split='train', data_dir=data_dir,
                          decoders={'image': tfds.decode.SkipDecoding()})


def _previous_example(record: dict, rng: np.random.Generator) -> dict[str, np.ndarray]:
  return {'image': transforms.imagenet_train(record['image'], rng, IMAGE_SIZE, transforms.PILLOW),
          'label': np.int32(record['label'])}


def previous_pipeline(source, batch: int, workers: int) -> grain.IterDataset:
  """dqnn's ImageNet training pipeline before the lean one, unchanged: the reference."""
  ds = (grain.MapDataset.source(source).seed(0).shuffle().repeat().random_map(_previous_example)
        .batch(batch, drop_remainder=True)
        .to_iter_dataset(grain.ReadOptions(num_threads=4, prefetch_buffer_size=256)))
  return ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers)) if workers else ds


def end_to_end_rate(data_dir: str, batch: int, batches: int, workers: int,
                    path: str) -> tuple[float, float]:
  """(img/s, img per CPU-second) of the `path` ('previous' or 'new') pipeline."""
  flags.FLAGS.mark_as_parsed()  # grain's worker processes read absl flags.
  if path == 'previous':
    source = ImageNetSizedSplit(previous_source(data_dir), IMAGENET_TRAIN_EXAMPLES)
    return _rate(iter(previous_pipeline(source, batch, workers)), batch, batches,
                 buffered=max(workers, 1) * 256)
  with imagenet_sized(data_dir) as info:
    ds = data.train_dataset(info, data_dir, global_batch_size=batch, seed=0,
                            image_size=IMAGE_SIZE, process_index=0, process_count=1,
                            num_workers=workers)
    buffered = max(workers, 1) * max(pipeline.threads_per_process(workers), 1) * batch
    return _rate(iter(ds), batch, batches, buffered=buffered)


class _ReadyBatches:
  """A training input's batches, each waited for on its devices."""

  def __init__(self, train_input):
    self._input = train_input

  def __iter__(self):
    return self

  def __next__(self):
    return jax.block_until_ready(self._input.next())


def dali_rate(data_dir: str, batch: int, batches: int) -> tuple[float, float]:
  """DALI's decode of the grain path's windows, into the global batch on this host's devices."""
  sharding = NamedSharding(Mesh(np.array(jax.devices()), ('data',)), PartitionSpec('data'))
  with imagenet_sized(data_dir) as info:
    train_input = dali_input.DaliInput(info, data_dir, sharding, global_batch_size=batch, seed=0,
                                       image_size=IMAGE_SIZE)
    return _rate(_ReadyBatches(train_input), batch, batches)


def _dali_mode() -> str:
  if jax.devices()[0].platform == 'gpu':
    return 'dali: nvJPEG, device=mixed'
  return 'dali: CPU-only mode, DALI\'s CPU decoder'


def _cpu_us(fn, items) -> float:
  """CPU microseconds per item of `fn(item)`, in this thread, the best of 3 rounds."""
  best = math.inf
  for _ in range(3):
    start = time.thread_time()
    for item in items:
      fn(item)
    best = min(best, (time.thread_time() - start) / len(items) * 1e6)
  return best


def _decode_only(decoder: str):
  """The decode `transforms.imagenet_train` does for an image (same crop, same DCT scale)."""
  def decode(encoded: bytes, rng: np.random.Generator):
    if decoder == transforms.PILLOW:
      from PIL import Image
      with Image.open(io.BytesIO(encoded)) as probe:
        width, height = probe.size
      _, _, w, h = transforms._random_resized_box(width, height, rng)
      return transforms._open_rgb_draft(encoded, IMAGE_SIZE / min(w, h))
    import simplejpeg
    height, width, _, _ = simplejpeg.decode_jpeg_header(encoded)
    _, _, w, h = transforms._random_resized_box(width, height, rng)
    return transforms.turbo_decode(encoded, height, width,
                                   transforms.dct_reduction(min(w, h), IMAGE_SIZE))
  return decode


def stage_costs(data_dir: str, batch: int, path: str) -> dict[str, float]:
  """CPU microseconds per image of each stage of `path`, one thread, no pipeline around it."""
  if path == 'previous':
    source = previous_source(data_dir)
  else:
    info = data.get_dataset_info('imagenet2012', data_dir)
    source = datasets.open_split(info.name, data_dir, info.train_split, 0, info.num_train)
  groups = [list(range(i, i + batch)) for i in range(0, len(source) - batch + 1, batch)]
  records = [source[i] for i in range(len(source))]
  decoder = transforms.PILLOW if path == 'previous' else transforms.default_decoder()
  decode = _decode_only(decoder)
  seeded = lambda fn: (lambda item: fn(item[1], np.random.default_rng(item[0])))
  transform = lambda encoded, rng: transforms.imagenet_train(encoded, rng, IMAGE_SIZE, decoder)
  jpegs = list(enumerate(r['image'] for r in records))
  costs = {'decode': _cpu_us(seeded(decode), jpegs)}
  costs['crop/resize + flip'] = _cpu_us(seeded(transform), jpegs) - costs['decode']
  costs['record read'] = _cpu_us(lambda i: source[i], range(len(source)))
  if path == 'previous':
    images = [transform(e, np.random.default_rng(i)) for i, e in jpegs]
    costs['batch assembly'] = _cpu_us(
        np.stack, [images[g[0]:g[-1] + 1] for g in groups]) / batch
  else:
    make_batch = lambda g: pipeline.imagenet_train_batch(
        [records[i] for i in g], np.random.default_rng(g[0]), image_size=IMAGE_SIZE,
        decoder=decoder)
    costs['batch assembly'] = (_cpu_us(make_batch, groups) / batch - costs['decode']
                               - costs['crop/resize + flip'])
  host_batch = np.zeros((batch, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
  device = jax.devices()[0]
  costs['host->device (uint8 batch)'] = _cpu_us(
      lambda b: jax.device_put(b, device).block_until_ready(), [host_batch] * 8) / batch
  return costs


def gil_held_us(data_dir: str, batch: int) -> float | None:
  """CPU microseconds per image the new path's batches (records read and cropped) spend in
  Python, holding the GIL: made with libjpeg-turbo's decode and OpenCV's warp (which release it)
  returning ready arrays. None where those libraries are not installed."""
  codecs = transforms._fast_codecs()  # pylint: disable=protected-access
  if not codecs:
    return None
  simplejpeg, cv2 = codecs
  info = data.get_dataset_info('imagenet2012', data_dir)
  source = datasets.open_split(info.name, data_dir, info.train_split, 0, info.num_train)
  groups = [range(i, i + batch) for i in range(0, len(source) - batch + 1, batch)]
  decoded = np.zeros((IMAGE_SIZE * 2, IMAGE_SIZE * 2, 3), np.uint8)
  cropped = np.zeros((IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
  with unittest.mock.patch.object(simplejpeg, 'decode_jpeg', lambda *a, **k: decoded), \
       unittest.mock.patch.object(cv2, 'warpAffine', lambda *a, **k: cropped):
    return _cpu_us(lambda g: pipeline.imagenet_train_batch(
        [source[i] for i in g], np.random.default_rng(0), image_size=IMAGE_SIZE),
        groups) / batch


PATHS = ('previous', 'new')


def handoff_us(batch: int) -> dict[str, float]:
  """CPU us an image to pass a uint8 batch [batch, 224, 224, 3] from a maker to a reader and copy
  it out: through a new shared-memory block each time (what grain's `mp_prefetch` does), and
  through `handoff`'s ring (both sides in this process, so only the memory costs are compared)."""
  images = np.random.default_rng(0).integers(0, 256, (batch, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)

  def new_block(_):
    made = shared_memory.SharedMemory(create=True, size=images.nbytes)
    np.copyto(np.ndarray(images.shape, images.dtype, made.buf), images)
    read = shared_memory.SharedMemory(made.name)
    np.ndarray(images.shape, images.dtype, read.buf).copy()
    read.close()
    made.close()
    made.unlink()

  worker, reader = handoff.worker_side(), handoff.training_side()
  ring = lambda _: reader(worker({'image': images}))
  return {name: _cpu_us(fn, range(20)) / batch
          for name, fn in (('new block per batch', new_block), ('reused ring', ring))}


def storage_quality_table(jpegs: list[bytes], short_side: int = 256,
                          qualities=(95, 90, 85)) -> None:
  """Prints, for the sample resized to `short_side` and stored at each JPEG quality: KB an image,
  the new path's decode (CPU us an image, one thread) and the PSNR against the resized image
  before compression."""
  from PIL import Image
  resized = []
  for encoded in jpegs:
    with Image.open(io.BytesIO(encoded)) as image:
      image = image.convert('RGB')
      resized.append(prepare.resized_to_short_side(image, short_side)
                     if min(image.size) > short_side else image)
  print(f'\nResized storage (short side {short_side}, Pillow bicubic) by JPEG quality '
        f'(prepare --jpeg_quality), {len(resized)} images:')
  print('| quality | KB an image | decode, us an image (new path) | PSNR vs uncompressed (dB) |')
  print('| ---: | ---: | ---: | ---: |')
  for quality in qualities:
    stored = []
    for image in resized:
      buf = io.BytesIO()
      image.save(buf, format='JPEG', quality=quality)
      stored.append(buf.getvalue())
    decode = _cpu_us(lambda item: transforms.turbo_decode(item[0], item[1].height,
                                                          item[1].width, 1),
                     list(zip(stored, resized)))
    errors = [np.mean((np.asarray(image, np.float64) - np.asarray(Image.open(io.BytesIO(e)))) ** 2)
              for image, e in zip(resized, stored)]
    print(f'| {quality} | {np.mean([len(e) for e in stored]) / 1024:.1f} | {decode:.0f} | '
          f'{10 * np.log10(255 ** 2 / np.mean(errors)):.1f} |')


def _median(rates: list[tuple[float, float]]) -> tuple[float, float]:
  return statistics.median(r[0] for r in rates), statistics.median(r[1] for r in rates)


def imagenet_table(folder: str, batch: int, batches: int, workers: int, rounds: int,
                   dali: bool = False,
                   resized_quality: int = prepare.DEFAULT_JPEG_QUALITY) -> dict[str, float]:
  """Prints the per-stage and end-to-end tables; returns end-to-end img per CPU-second (the
  median of `rounds` interleaved rounds)."""
  jpegs = [open(os.path.join(folder, f), 'rb').read() for f in sorted(os.listdir(folder))]
  reference = tf_data_rate(jpegs, batch, batches)
  decoders = {'previous': transforms.PILLOW, 'new': transforms.default_decoder()}
  settings = sorted({0, workers})
  rows, stages, result, gil = [], {}, {}, {}
  with tempfile.TemporaryDirectory() as tmp:
    for short_side, quality, kind in ((None, prepare.DEFAULT_JPEG_QUALITY, 'original'),
                                      (256, resized_quality, 'resized')):
      data_dir = os.path.join(tmp, kind)
      prepare.prepare_imagenet_folder(folder, data_dir, max_short_side=short_side,
                                      jpeg_quality=quality)
      gil[kind] = gil_held_us(data_dir, batch)
      measured = {(path, w): [] for path in PATHS for w in settings}
      for _ in range(rounds):  # Interleaved: load that drifts moves every path alike.
        for (path, w), found in measured.items():
          found.append(end_to_end_rate(data_dir, batch, batches, w, path))
      for path in PATHS:
        costs = stage_costs(data_dir, batch, path)
        rates = {w: _median(measured[path, w]) for w in settings}
        in_stages = sum(c for name, c in costs.items() if not name.startswith('host'))
        costs['pipeline (threads, prefetch, indexing)'] = 1e6 / rates[0][1] - in_stages
        if workers:
          costs['worker hand-off'] = 1e6 / rates[workers][1] - 1e6 / rates[0][1]
        stages[path, kind] = costs
        rows += [(path, kind, w, rates[w], [cpu for _, cpu in measured[path, w]])
                 for w in settings]
        result[kind if path == 'new' else f'previous_{kind}'] = round(rates[workers][1])
      if dali:
        found = [dali_rate(data_dir, batch, batches) for _ in range(rounds)]
        rates = _median(found)
        rows.append(('dali', kind, 0, rates, [cpu for _, cpu in found]))
        result[f'dali_{kind}'] = round(rates[1])
  print(f'\nImageNet training images ({IMAGE_SIZE}px, batch {batch}), {os.cpu_count()} CPU '
        f'cores, jax {jax.__version__}, {_versions(dali)}; the sample read as an ImageNet-sized '
        f'split of {IMAGENET_TRAIN_EXAMPLES:,}; resized = short side 256, JPEG quality '
        f'{resized_quality}.')
  print('\nCPU microseconds per image by stage (one thread; pipeline = end to end in threads '
        'minus the stages above it; worker hand-off = end to end with '
        f'{workers} worker processes minus threads; negative = within noise):')
  names = list(next(iter(stages.values())))
  print('| stage | ' + ' | '.join(f'{p} ({decoders[p]}), {k}' for p, k in stages) + ' |')
  print('| --- |' + ' ---: |' * len(stages))
  for name in names:
    print(f'| {name} | ' + ' | '.join(f'{c[name]:.0f}' for c in stages.values()) + ' |')
  if all(gil.values()):
    print('\nOf the new path\'s stages, Python holding the GIL (the batch function with the '
          'decode and the warp, which release it, returning ready arrays): ' + ', '.join(
              f'{kind} {us:.0f} us per image, so one process tops out near {1e6 / us:,.0f} img/s'
              for kind, us in gil.items()) + '.')
  passing = handoff_us(batch)
  print(f'\nHanding a batch from a worker process to the trainer (a {batch} x {IMAGE_SIZE}px '
        'uint8 batch, made, passed and copied out in one process), CPU us an image: ' +
        ', '.join(f'{name} {us:.0f}' for name, us in passing.items()) + '.')
  if transforms.default_decoder() == transforms.LIBJPEG_TURBO:
    storage_quality_table(jpegs)
  print(f'\nEnd to end, over the prepared array_record data, {batches} batches after the buffer '
        f'is drained, median of {rounds} interleaved rounds. img per CPU-second = img/s per '
        f'fully used core; cores per H200 = {H200_IMAGES_PER_S:,} img/s / that.')
  print('| path | JPEGs | worker processes | img/s (wall) | img per CPU-second | rounds | '
        'cores per H200 | vs previous |')
  print('| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |')
  if reference:
    print(f'| tf.data ops (decode_and_crop_jpeg), AUTOTUNE | original | - | {reference[0]:.0f} | '
          f'{reference[1]:.0f} | 1 | {H200_IMAGES_PER_S / reference[1]:.0f} | - |')
  previous = {(k, w): cpu for p, k, w, (_, cpu), _ in rows if p == 'previous'}
  for path, kind, w, (wall, cpu), each in rows:
    label = _dali_mode() if path == 'dali' else f'{path}: {decoders[path]}'
    print(f'| {label} | {kind} | {w} | {wall:.0f} | {cpu:.0f} | '
          f'{" / ".join(f"{c:.0f}" for c in each)} | {H200_IMAGES_PER_S / cpu:.0f} | '
          f'{cpu / previous[kind, w]:.2f}x |')
  return result


def _versions(dali: bool) -> str:
  import PIL
  found = [f'Pillow {PIL.__version__}', f'grain {importlib.metadata.version("grain")}']
  if dali:
    found.append(f'DALI {dali_input.import_dali().__version__}')
  for module, name in (('simplejpeg', 'simplejpeg'), ('cv2', 'OpenCV')):
    try:
      found.append(f'{name} {importlib.import_module(module).__version__}')
    except ImportError:
      found.append(f'no {name}')
  return ', '.join(found)


def cifar_step_rates(data_dir: str | None, steps: int) -> None:
  config = base.cifar100('cifar_resnet20', 2, 2)
  config.data_dir = data_dir or ''
  if not data_dir:
    config.dataset = data.SAMPLE
  info = data.get_dataset_info(config.dataset, data_dir)
  mesh = Mesh(np.array(jax.devices()), ('data',))
  model = runs.model_from_config(config, classes=info.num_classes)
  tx = run_builder.create_optimizer(config, lambda step: 0.01)
  results = {}
  for on_device in (False, True):
    config.input_on_device = on_device
    train_input = run_builder.training_input(config, info, mesh)
    step = jax.jit(lambda state, inputs, make_batch=train_input.make_batch: train.train_step(
        state, inputs, model=model, tx=tx, make_batch=make_batch, input_statistics='cifar100',
        label_smoothing=0.0), donate_argnums=0)
    first = jax.jit(train_input.make_batch)(train_input.next())
    state = train.initial_state(model, tx, jax.random.key(0),
                                data.standardize(first['image'], 'cifar100'))
    times = []
    for i in range(steps + 2):
      if i == 2:
        cpu_start = _cpu_seconds()
      start = time.perf_counter()
      state, step_metrics, _ = step(state, train_input.next())
      jax.block_until_ready(step_metrics)
      if i >= 2:
        times.append(time.perf_counter() - start)
    images = steps * config.global_batch_size
    results[on_device] = (config.global_batch_size / statistics.median(times),
                          images / _cpu_seconds_since(cpu_start))
  print(f'\nCIFAR-100 ({info.name}, {info.num_train} train images), DQ W2A2 cifar_resnet20, '
        f'batch {config.global_batch_size}, {jax.device_count()} {jax.devices()[0].platform} '
        f'device(s), median of {steps} steps')
  print('| input | img/s (wall) | img per CPU-second | vs host pipeline (wall, CPU) |')
  print('| --- | ---: | ---: | ---: |')
  for on_device, name in ((False, 'host pipeline (grain)'), (True, 'on device')):
    (wall, cpu), (host_wall, host_cpu) = results[on_device], results[False]
    print(f'| {name} | {wall:.0f} | {cpu:.0f} | {wall / host_wall:.2f}x, {cpu / host_cpu:.2f}x |')


def main():
  tfds.disable_progress_bar()
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--imagenet_folder', default='')
  parser.add_argument('--cifar_data_dir', default='')
  parser.add_argument('--steps', type=int, default=10)
  parser.add_argument('--batches', type=int, default=40)
  parser.add_argument('--batch', type=int, default=32)
  parser.add_argument('--rounds', type=int, default=3,
                      help='interleaved end-to-end rounds of each ImageNet path (median)')
  parser.add_argument('--workers', type=int, default=0,
                      help='worker processes of both ImageNet pipelines (0: threads only)')
  parser.add_argument('--skip_cifar', action='store_true')
  parser.add_argument('--dali', action='store_true',
                      help='also measure the DALI input (needs NVIDIA DALI; CPU-only mode '
                           'without a GPU)')
  parser.add_argument('--resized_quality', type=int, default=prepare.DEFAULT_JPEG_QUALITY,
                      help='JPEG quality the resized copy is stored at (prepare --jpeg_quality)')
  args = parser.parse_args()
  if args.dali:
    dali_input.import_dali()  # Fails now, naming the fix, not after the grain measurements.
  print(f'jax {jax.__version__}, {jax.devices()[0].device_kind}')
  result = None
  if args.imagenet_folder:
    result = imagenet_table(args.imagenet_folder, args.batch, args.batches, args.workers,
                            args.rounds, args.dali, args.resized_quality)
  if not args.skip_cifar:
    cifar_step_rates(args.cifar_data_dir or None, args.steps)
  if result:
    print(json.dumps(result))


if __name__ == '__main__':
  main()
