"""Datasets on disk: `DatasetInfo`, and where each split's examples come from.

What each dataset is (classes, splits, statistics, how it is prepared) is its record in
`dqnn.data.specs`; this module reads the records and never branches on a dataset's name.

Prepared datasets are TFDS directories in array_record format, `<data_dir>/<name>/<version>/`,
read with `tfds.data_source` (random access, no TensorFlow). `python -m dqnn.data.prepare`
writes them offline; TFDS's own download-and-prepare (the CIFARs only) needs the `[tf]` extra.
`cifar100_sample` is a small real CIFAR-100 sample shipped inside the package, so a first run
needs neither a download nor a prepare step.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import importlib.resources
import importlib.util
import io
import os
import shlex
import socket

from array_record.python import array_record_module
import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.proto import tf_example_pb2

from dqnn.data.errors import DatasetDamagedError
from dqnn.data.errors import DatasetNotFoundError
from dqnn.data.specs import EMBEDDED
from dqnn.data.specs import FAKE_INPUT_STATISTICS
from dqnn.data.specs import SOURCE_INPUT_HELP
from dqnn.data.specs import SPECS
from dqnn.data.specs import spec
# Re-exported for the callers of datasets.
from dqnn.data.specs import FAKE  # pylint: disable=unused-import
from dqnn.data.specs import SAMPLE  # pylint: disable=unused-import
from dqnn.data.specs import SUPPORTED_DATASETS

_NETWORK_TIMEOUT_S = 3.0


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  name: str
  num_classes: int
  image_size: int
  train_split: str
  eval_split: str
  num_train: int
  num_eval: int


def input_statistics(name: str) -> str:
  """The key of `transforms.INPUT_STATISTICS` whose mean/std standardise `name`'s images."""
  return name if name in SPECS else FAKE_INPUT_STATISTICS


def is_small(name: str) -> bool:
  """Whether the whole split is decoded into memory (and may live on the accelerators)."""
  return spec(name).in_memory


def resolve_data_dir(data_dir: str | os.PathLike | None) -> str:
  """`data_dir` argument, else `$TFDS_DATA_DIR`, else the TFDS default."""
  if data_dir:
    return os.fspath(data_dir)
  env = os.environ.get('TFDS_DATA_DIR')
  if env:
    return env
  return os.fspath(os.path.expanduser(tfds.core.constants.DATA_DIR))


def prepare_command(name: str, data_dir: str) -> str:
  """The offline command that builds `name` into `data_dir`."""
  return spec(name).prepare_command.format(data_dir=shlex.quote(data_dir))


_DOWNLOAD_OFF = 'not prepared and download=False'


def _not_found_message(name: str, data_dir: str, reason: str) -> str:
  lines = [
      f'Dataset {name!r} is not available in data_dir={data_dir!r} ({reason}).',
      'Prepare it offline from local files with:',
      f'  {prepare_command(name, data_dir)}',
  ]
  dataset_spec = spec(name)
  lines.append(SOURCE_INPUT_HELP[dataset_spec.source])
  if dataset_spec.download_host and reason == _DOWNLOAD_OFF:
    # Otherwise the download was asked for and could not work.
    lines.append('Or pass --config.download=True to download it via TFDS (needs internet and '
                 "the TensorFlow extra: pip install -e '.[tf]').")
  if dataset_spec.sample:
    lines.append(f'Or try the embedded sample: --config.dataset={dataset_spec.sample}.')
  if dataset_spec.manual_archives:
    lines += [
        f'Or, with the official archives (TFDS cannot download {dataset_spec.title}): put '
        f'{" and ".join(dataset_spec.manual_archives)} into '
        f'{os.path.join(data_dir, "downloads", "manual")} and run (needs the TensorFlow extra)',
        f'  tfds build {name} --data_dir={shlex.quote(data_dir)} --file_format=array_record',
    ]
  return '\n'.join(lines)


def _tfrecord_message(name: str, path: str) -> str:
  return '\n'.join([
      f'{path} holds {name!r} as tfrecord files; dqnn reads array_record (random access, no '
      'TensorFlow). Convert it in place once (needs the TensorFlow extra, pip install -e '
      "'.[tf]'):",
      f'  tfds convert_format --dataset_version_dir={shlex.quote(path)} '
      '--out_file_format=array_record',
      'or prepare it again with python -m dqnn.data.prepare.'])


def _download(builder, name: str, data_dir: str, host: tuple[str, int]) -> None:
  """TFDS download-and-prepare from `host`, failing within seconds when it cannot work here."""
  if importlib.util.find_spec('tensorflow') is None:
    raise DatasetNotFoundError(_not_found_message(
        name, data_dir, "download needs TensorFlow: pip install -e '.[tf]'"))
  try:
    socket.create_connection(host, timeout=_NETWORK_TIMEOUT_S).close()
  except OSError as e:
    raise DatasetNotFoundError(_not_found_message(
        name, data_dir, f'no network: cannot reach {host[0]} ({e})')) from e
  try:
    builder.download_and_prepare(file_format='array_record')
  except Exception as e:  # pylint: disable=broad-except
    raise DatasetNotFoundError(
        _not_found_message(name, data_dir, f'download failed: {e!r}')) from e


def load_builder(name: str,
                 data_dir: str | os.PathLike | None = None,
                 *,
                 download: bool = False) -> tfds.core.DatasetBuilder:
  """Returns a prepared array_record TFDS builder, or raises `DatasetNotFoundError`."""
  dataset_spec = spec(name)
  data_dir = resolve_data_dir(data_dir)
  builder = tfds.builder(name, data_dir=data_dir)
  if not builder.is_prepared():
    if not (download and dataset_spec.download_host):
      reason = ('not prepared; TFDS cannot download it' if not dataset_spec.download_host
                else _DOWNLOAD_OFF)
      raise DatasetNotFoundError(_not_found_message(name, data_dir, reason))
    _download(builder, name, data_dir, dataset_spec.download_host)
  if builder.info.file_format != tfds.core.FileFormat.ARRAY_RECORD:
    raise DatasetNotFoundError(_tfrecord_message(name, os.fspath(builder.data_dir)))
  missing = [s for s in (dataset_spec.train_split, dataset_spec.eval_split)
             if s not in builder.info.splits]
  if missing:
    raise DatasetNotFoundError(_not_found_message(
        name, data_dir, f'prepared dataset lacks split(s) {missing}'))
  return builder


def _embedded_arrays(name: str) -> dict[str, np.ndarray]:
  """An embedded dataset's `<split>_image` and `<split>_label` arrays."""
  with importlib.resources.files('dqnn.data.sample').joinpath(f'{name}.npz').open('rb') as f:
    with np.load(f) as arrays:
      return dict(arrays)


def get_dataset_info(name: str,
                     data_dir: str | None = None,
                     *,
                     download: bool = False) -> DatasetInfo:
  """Static facts about a prepared dataset (split sizes read from its metadata)."""
  dataset_spec = spec(name)
  if dataset_spec.source == EMBEDDED:
    arrays = _embedded_arrays(name)
    num_train, num_eval = len(arrays['train_label']), len(arrays['test_label'])
  else:
    splits = load_builder(name, data_dir, download=download).info.splits
    num_train = int(splits[dataset_spec.train_split].num_examples)
    num_eval = int(splits[dataset_spec.eval_split].num_examples)
  # Classes and image size are the record's, the one source every reader of a config uses.
  return DatasetInfo(name=name, num_classes=dataset_spec.num_classes,
                     image_size=dataset_spec.image_size,
                     train_split=dataset_spec.train_split, eval_split=dataset_spec.eval_split,
                     num_train=num_train, num_eval=num_eval)


def _damaged_message(name: str, data_dir: str, version_dir: str, what: str, reason: str) -> str:
  return '\n'.join([
      f'Dataset {name!r} is damaged: {what} {reason}.',
      'Set it aside and prepare it again (checkpoints are not affected; training resumes):',
      f'  mv {shlex.quote(version_dir)} {shlex.quote(version_dir.rstrip(os.sep) + ".damaged")}',
      f'  {prepare_command(name, data_dir)}'])


def check_split(name: str, data_dir: str | None, split: str) -> None:
  """Raises `DatasetDamagedError` unless every file of a prepared split holds the records its
  metadata lists. Small (CIFAR-size) splits are read whole, checksums included (a fraction of a
  second); ImageNet's only by their footers (milliseconds): a truncated or replaced shard is
  found before training, a damaged block inside one when it is read."""
  if spec(name).source == EMBEDDED:  # Shipped inside the package.
    return
  data_dir = resolve_data_dir(data_dir)
  split_info = load_builder(name, data_dir).info.splits[split]
  for path, expected in zip(split_info.filepaths, split_info.shard_lengths):
    path = os.fspath(path)
    try:
      reader = array_record_module.ArrayRecordReader(path, 'readahead_buffer_size:0')
      found = reader.num_records()
      if is_small(name):
        reader.read_all()
      reader.close()
    except (OSError, RuntimeError, ValueError) as error:
      raise DatasetDamagedError(_damaged_message(
          name, data_dir, os.path.dirname(path), path,
          f'cannot be read ({_first_line(error) or "truncated, or not array_record"})'
      )) from None
    if found != expected:
      raise DatasetDamagedError(_damaged_message(
          name, data_dir, os.path.dirname(path), path,
          f'holds {found} records where {expected} were written'))


def _first_line(error: Exception) -> str:
  return (str(error).strip().splitlines() or [''])[0][:300]


class _ParsedExamples:
  """A split's raw records as {feature: value}, parsed straight from their tf.Example protos.

  Every feature of dqnn's datasets holds one value (encoded image and file name as bytes, labels
  as int). TFDS's own deserialisation, through the feature spec, costs ~30 us more a record
  (docs/results.md).
  """

  def __init__(self, records):
    self._records = records

  def __len__(self) -> int:
    return len(self._records)

  @staticmethod
  def _parse(record: bytes) -> dict:
    features = tf_example_pb2.Example.FromString(record).features.feature
    return {name: getattr(feature, feature.WhichOneof('kind')).value[0]
            for name, feature in features.items()}

  def __getitem__(self, index):
    return self._parse(self._records[index])

  def __getitems__(self, indices):
    return [self._parse(record) for record in self._records.__getitems__(indices)]


class _NamedDamage:
  """A source whose read errors (Riegeli's checksum mismatches) name the dataset and its fix."""

  def __init__(self, source, name: str, data_dir: str, version_dir: str, split: str):
    self._source, self._name, self._split = source, name, split
    self._data_dir, self._version_dir = data_dir, version_dir

  def __len__(self) -> int:
    return len(self._source)

  def _read(self, read, indices):
    try:
      return read(indices)
    except RuntimeError as error:  # array_record reports damage as RuntimeError.
      raise DatasetDamagedError(_damaged_message(
          self._name, self._data_dir, self._version_dir,
          f'a file of its {self._split!r} split in {self._version_dir}',
          f'cannot be read ({_first_line(error)})')) from None

  def __getitem__(self, index):
    return self._read(self._source.__getitem__, index)

  def __getitems__(self, indices):
    return self._read(self._source.__getitems__, indices)


def open_split(name: str, data_dir: str | None, split: str, start: int, end: int):
  """Examples [start, end) of a split, as a random-access source of {'image', 'label'}.

  Small (32x32) datasets come back decoded, as `InMemorySource` of uint8 images; ImageNet as
  encoded JPEG bytes (decoded, cropped and resized by the pipeline's workers).
  """
  if spec(name).source == EMBEDDED:
    arrays = _embedded_arrays(name)
    return InMemorySource(arrays[f'{split}_image'][start:end],
                          arrays[f'{split}_label'][start:end])
  builder = load_builder(name, data_dir)
  records = builder.as_data_source(split=f'{split}[{start}:{end}]',
                                   deserialize_method=tfds.decode.DeserializeMethod.RAW_BYTES)
  source = _NamedDamage(_ParsedExamples(records), name, resolve_data_dir(data_dir),
                        os.fspath(builder.data_dir), split)
  if not is_small(name):
    return source
  examples = source.__getitems__(range(len(source)))
  # PIL releases the GIL while decoding: threads decode the split on every core.
  with concurrent.futures.ThreadPoolExecutor(os.cpu_count()) as pool:
    images = list(pool.map(_decode_png, [e['image'] for e in examples], chunksize=256))
  return InMemorySource(np.stack(images), np.array([e['label'] for e in examples]))


def _decode_png(encoded: bytes) -> np.ndarray:
  from PIL import Image  # pylint: disable=g-import-not-at-top
  with Image.open(io.BytesIO(encoded)) as image:
    return np.asarray(image.convert('RGB'))


class InMemorySource:
  """A decoded split held as arrays; `images` uint8 [N, H, W, 3], `labels` int32 [N]."""

  def __init__(self, images: np.ndarray, labels: np.ndarray):
    self.images = np.asarray(images, np.uint8)
    self.labels = np.asarray(labels, np.int32)

  def __len__(self) -> int:
    return len(self.labels)

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    return {'image': self.images[index], 'label': self.labels[index]}
