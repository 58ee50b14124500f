"""Writes TFDS-format datasets from local examples, using the real TFDS builders.

`write_tfds_dataset('cifar10', ...)` instantiates the *installed* TFDS builder
(`tfds.builder(name, data_dir=...)`), replaces only its `_split_generators` on the instance with
our local examples and runs `download_and_prepare` without network, in array_record format. The
result is a normal TFDS directory `<data_dir>/<name>/<version>/` (dataset_info.json,
features.json, `<name>-<split>.array_record-*`) with exactly the builder's features. Images are
passed already encoded (PNG / JPEG bytes), which keeps TensorFlow out of the writing too.

The new dataset is written completely beside the old one, in a staging folder
`<data_dir>/.<name>-prepare-<host>-<pid>-*`, and only then renamed into place, so a failed
prepare never leaves a half-written dataset nor loses the one that was there. The staging folder
is removed however the prepare ends; one left by a killed prepare (its process gone) is removed
by the next prepare on that host.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import socket
import tempfile
from typing import Callable, Iterable, Mapping

from absl import logging
import numpy as np
import tensorflow_datasets as tfds

from dqnn.data import specs

_IMAGENET_LABELS = 'datasets/imagenet2012/labels.txt'


def imagenet_wnids() -> list[str]:
  """The 1000 ILSVRC-2012 wnids in TFDS label order (sorted), from the tfds wheel."""
  path = tfds.core.tfds_path(_IMAGENET_LABELS)
  if not path.exists():
    raise FileNotFoundError(
        f'ImageNet label list not found in the installed tensorflow_datasets '
        f'({path}); cannot map wnids to label indices.')
  wnids = path.read_text().split()
  if len(wnids) != 1000 or wnids != sorted(wnids):
    raise ValueError(f'Unexpected ImageNet label list at {path}.')
  return wnids


def png(image: np.ndarray) -> io.BytesIO:
  """A lossless encoding TFDS stores as-is (a raw array would need TensorFlow to encode)."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  buf = io.BytesIO()
  Image.fromarray(image).save(buf, format='PNG', compress_level=1)
  buf.seek(0)
  return buf


def npz_example(dataset_spec: specs.DatasetSpec, key: str, image: np.ndarray,
                label: int) -> dict:
  """A CIFAR-style example with the features of its TFDS builder: id, image, label, and the
  coarse label where the dataset has one (CIFAR-100)."""
  example = {'id': key, 'image': png(image), 'label': int(label)}
  if dataset_spec.coarse_labels:
    example['coarse_label'] = dataset_spec.coarse_labels[label]
  return example


def _is_running(pid: int) -> bool:
  try:
    os.kill(pid, 0)  # PermissionError: it runs, as another user.
  except ProcessLookupError:
    return False
  except PermissionError:
    pass
  return True


def remove_stale_staging(name: str, data_dir: str) -> None:
  """Removes the staging folders of killed prepares of `name` on this host."""
  host = socket.gethostname()
  stale = re.compile(re.escape(f'.{name}-prepare-{host}-') + r'(\d+)-')
  for entry in os.scandir(data_dir):
    match = stale.match(entry.name)
    if match and entry.is_dir() and not _is_running(int(match.group(1))):
      shutil.rmtree(entry.path, ignore_errors=True)
      logging.info('Removed %s, left by a prepare that was killed.', entry.path)


class DatasetExistsError(FileExistsError):
  """A prepared dataset already exists and overwrite=False."""


def write_tfds_dataset(
    name: str,
    data_dir: str,
    split_examples: Mapping[str, Callable[[], Iterable[tuple[str, dict]]]],
    *,
    overwrite: bool = False,
) -> str:
  """Writes `split_examples` ({split: () -> iterable of (key, example)}).

  Returns the dataset directory `<data_dir>/<name>/<version>`.
  """
  data_dir = os.fspath(data_dir)
  out = os.fspath(tfds.builder(name, data_dir=data_dir).data_dir)
  if os.path.exists(out) and not overwrite:
    raise DatasetExistsError(
        f'{out} already exists; pass --overwrite (overwrite=True) to replace it.')
  os.makedirs(data_dir, exist_ok=True)
  remove_stale_staging(name, data_dir)
  staging = tempfile.mkdtemp(prefix=f'.{name}-prepare-{socket.gethostname()}-{os.getpid()}-',
                             dir=data_dir)
  try:
    builder = tfds.builder(name, data_dir=staging)

    def _split_generators(dl_manager):  # Replaces the download step.
      del dl_manager
      return {split: gen() for split, gen in split_examples.items()}

    builder._split_generators = _split_generators  # pylint: disable=protected-access
    builder.download_and_prepare(
        download_dir=os.path.join(staging, 'downloads'),
        file_format='array_record',
        download_config=tfds.download.DownloadConfig(
            compute_stats=tfds.download.ComputeStatsMode.SKIP, try_download_gcs=False))
    os.makedirs(os.path.dirname(out), exist_ok=True)
    if os.path.exists(out):
      retired = out + '.replaced'
      shutil.rmtree(retired, ignore_errors=True)
      os.replace(out, retired)
      os.replace(os.fspath(builder.data_dir), out)
      shutil.rmtree(retired)
    else:
      os.replace(os.fspath(builder.data_dir), out)
  finally:
    shutil.rmtree(staging, ignore_errors=True)
  return out
