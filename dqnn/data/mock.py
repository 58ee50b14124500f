"""Offline mock datasets for tests: `with mock_dataset('cifar100') as data_dir:`.

`tfds.testing.mock_data` is NOT used: even with `MockPolicy.USE_CODE` it
reports no splits (`info.splits` is empty, so split sizes are unknown), ignores
split slicing (every host shard gets all `num_examples`, breaking the
exactly-once eval contract) and returns already-decoded ImageNet images. So the
mock instead writes a tiny *real* TFDS dataset (random images, same features as
the real builder) into a temporary data_dir with `dqnn.data.writer`, and points
`$TFDS_DATA_DIR` at it for the duration of the context. Inside it,
`get_dataset_info`, `train_dataset` and `eval_batches` work unchanged with
`data_dir=None` (or the yielded path). Needs no network and no shared data.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from typing import Iterator

import numpy as np

from dqnn.data import specs
from dqnn.data import writer
from dqnn.data.specs import spec


def _random_jpeg(rng: np.random.Generator, grayscale: bool) -> bytes:
  from PIL import Image  # pylint: disable=g-import-not-at-top
  h, w = rng.integers(24, 80, size=2)
  arr = rng.integers(0, 256, size=(h, w) if grayscale else (h, w, 3), dtype=np.uint8)
  buf = io.BytesIO()
  Image.fromarray(arr).save(buf, format='JPEG', quality=90)
  return buf.getvalue()


def write_mock_dataset(name: str, data_dir: str, *, num_examples: int = 64,
                       num_eval_examples: int | None = None,
                       num_classes: int | None = None, seed: int = 0) -> str:
  """Writes a random `name` dataset to `data_dir`; returns its directory."""
  dataset_spec = spec(name)
  num_classes = min(num_classes or 10, dataset_spec.num_classes)
  if num_eval_examples is None:
    num_eval_examples = max(1, num_examples // 4)
  rng = np.random.default_rng(seed)

  def gen(split, n):
    def _gen():
      for i in range(n):
        label = i % num_classes
        key = f'{split}_{i:05d}'
        if dataset_spec.source == specs.NPZ:
          yield key, writer.npz_example(
              dataset_spec, key, rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), label)
        else:
          yield key, {'image': io.BytesIO(_random_jpeg(rng, grayscale=i % 5 == 4)),
                      'label': label, 'file_name': key + '.JPEG'}
    return _gen

  return writer.write_tfds_dataset(
      name, data_dir, {dataset_spec.train_split: gen(dataset_spec.train_split, num_examples),
                       dataset_spec.eval_split: gen(dataset_spec.eval_split, num_eval_examples)},
      overwrite=True)


@contextlib.contextmanager
def mock_dataset(name: str, num_examples: int = 64, *,
                 num_eval_examples: int | None = None,
                 num_classes: int | None = None,
                 seed: int = 0,
                 data_dir: str | None = None) -> Iterator[str]:
  """Context with a tiny offline `name` dataset; yields its TFDS data_dir.

  `num_examples` train examples and `num_eval_examples` (default
  num_examples // 4) eval examples, labels cycling over `num_classes`
  (default 10) classes. `$TFDS_DATA_DIR` points at the data_dir inside the
  context. May be nested for both datasets (pass the same `data_dir`).
  """
  old = os.environ.get('TFDS_DATA_DIR')
  with contextlib.ExitStack() as stack:
    if data_dir is None:
      data_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix='dqnn_mock_'))
    write_mock_dataset(name, data_dir, num_examples=num_examples,
                       num_eval_examples=num_eval_examples,
                       num_classes=num_classes, seed=seed)
    os.environ['TFDS_DATA_DIR'] = data_dir
    try:
      yield data_dir
    finally:
      if old is None:
        os.environ.pop('TFDS_DATA_DIR', None)
      else:
        os.environ['TFDS_DATA_DIR'] = old
