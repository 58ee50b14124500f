"""Dataset registry: names, splits, `DatasetInfo` and offline-safe TFDS builder loading.

Datasets are read with `tfds.builder(name, data_dir=...)`. Data written by
`python -m dqnn.data.prepare` lives at `<data_dir>/<name>/<version>/` with the
same features as the real TFDS builder, so real and prepared data are read by
exactly the same code. Nothing touches the network unless `download=True` is
passed for a downloadable dataset (only `cifar100`).
"""

from __future__ import annotations

import dataclasses
import os
import shlex

import tensorflow as tf
import tensorflow_datasets as tfds

from dqnn.data.errors import DatasetNotFoundError

# Keep TF (used only for the input pipeline) away from accelerators.
try:
  tf.config.set_visible_devices([], 'GPU')
except RuntimeError:  # Devices already initialised; nothing to do.
  pass


@dataclasses.dataclass(frozen=True)
class _Spec:
  num_classes: int
  image_size: int
  train_split: str
  eval_split: str
  downloadable: bool


_SPECS = {
    'cifar100': _Spec(100, 32, 'train', 'test', downloadable=True),
    'imagenet2012': _Spec(1000, 224, 'train', 'validation', downloadable=False),
}

SUPPORTED_DATASETS = tuple(sorted(_SPECS))


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  name: str
  num_classes: int
  image_size: int
  train_split: str
  eval_split: str
  num_train: int
  num_eval: int


def _spec(name: str) -> _Spec:
  if name not in _SPECS:
    raise ValueError(
        f'Unknown dataset {name!r}; supported: {", ".join(SUPPORTED_DATASETS)}.')
  return _SPECS[name]


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
  d = shlex.quote(data_dir)
  if name == 'cifar100':
    return ('python -m dqnn.data.prepare --source=npz '
            f'--input=/path/to/cifar100/train.npz --data_dir={d}')
  return ('python -m dqnn.data.prepare --source=image_folder '
          f'--input=/path/to/imagenet/images --data_dir={d}')


def _not_found_message(name: str, data_dir: str, reason: str) -> str:
  lines = [
      f'Dataset {name!r} is not available in data_dir={data_dir!r} ({reason}).',
      'Prepare it offline from local files with:',
      f'  {prepare_command(name, data_dir)}',
  ]
  if name == 'cifar100':
    lines.append(
        '(--input is an .npz with uint8 `image` [N,32,32,3] and `label` [N]; '
        'the `test` split is then a held-out carve of that file.)')
    if not reason.startswith('download failed'):
      lines.append('Alternatively pass download=True to download it via TFDS '
                   '(needs internet).')
  else:
    lines += [
        '(--input is a folder of <class_wnid>/*.JPEG sub-folders or flat '
        '<wnid>_*.JPEG files.)',
        'Or, with the official archives (TFDS cannot download ImageNet): put '
        'ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar into '
        f'{os.path.join(data_dir, "downloads", "manual")} and run',
        f'  tfds build imagenet2012 --data_dir={shlex.quote(data_dir)}',
    ]
  return '\n'.join(lines)


def load_builder(name: str,
                 data_dir: str | os.PathLike | None = None,
                 *,
                 download: bool = False) -> tfds.core.DatasetBuilder:
  """Returns a prepared TFDS builder, or raises `DatasetNotFoundError`."""
  spec = _spec(name)
  data_dir = resolve_data_dir(data_dir)
  builder = tfds.builder(name, data_dir=data_dir)
  if not builder.is_prepared():
    if not (download and spec.downloadable):
      reason = ('not prepared; TFDS cannot download it' if not spec.downloadable
                else 'not prepared and download=False')
      raise DatasetNotFoundError(_not_found_message(name, data_dir, reason))
    try:
      builder.download_and_prepare()
    except Exception as e:  # pylint: disable=broad-except
      raise DatasetNotFoundError(
          _not_found_message(name, data_dir, f'download failed: {e!r}')) from e
  missing = [s for s in (spec.train_split, spec.eval_split)
             if s not in builder.info.splits]
  if missing:
    raise DatasetNotFoundError(_not_found_message(
        name, data_dir, f'prepared dataset lacks split(s) {missing}'))
  return builder


def get_dataset_info(name: str,
                     data_dir: str | None = None,
                     *,
                     download: bool = False) -> DatasetInfo:
  """Static facts about a prepared dataset (split sizes read from TFDS)."""
  spec = _spec(name)
  builder = load_builder(name, data_dir, download=download)
  splits = builder.info.splits
  return DatasetInfo(
      name=name,
      num_classes=int(builder.info.features['label'].num_classes),
      image_size=spec.image_size,
      train_split=spec.train_split,
      eval_split=spec.eval_split,
      num_train=int(splits[spec.train_split].num_examples),
      num_eval=int(splits[spec.eval_split].num_examples),
  )
