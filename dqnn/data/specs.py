"""One `DatasetSpec` record per dataset: everything dqnn knows about it, in one place.

The pipelines, the offline prepare tool, the input statistics, the mock datasets, the error
messages and the config builders all read these records; none branches on a dataset's name. To
add a dataset, add its record here (docs/architecture.md, "Adding a dataset").

`FAKE` is not a dataset and has no record: synthetic batches whose sizes come from the config
(`pipeline.fake_batches`), standardised with the statistics of `FAKE_INPUT_STATISTICS`. The embedded
CIFAR-100 sample is a record whose source is `EMBEDDED`.
"""

from __future__ import annotations

import dataclasses

FAKE = 'fake'  # Synthetic batches for throughput runs: no files, sizes from the config.
FAKE_INPUT_STATISTICS = 'imagenet2012'  # Whose statistics standardise the synthetic images.
SAMPLE = 'cifar100_sample'

# How a dataset's files are made: `python -m dqnn.data.prepare --source=npz` (uint8 32x32 images
# and labels in an .npz) or `--source=image_folder` (JPEGs in class folders), or shipped inside
# the package (EMBEDDED, nothing to prepare).
NPZ = 'npz'
IMAGE_FOLDER = 'image_folder'
EMBEDDED = 'embedded'
# Train augmentation: 'cifar' pads by 4, crops 32x32 and flips, on decoded in-memory batches;
# 'imagenet' is the Inception random-resized crop and flip of each encoded JPEG.
CIFAR_AUGMENTATION = 'cifar'
IMAGENET_AUGMENTATION = 'imagenet'

# What `--input` is, per prepare source (said when a dataset is missing).
SOURCE_INPUT_HELP = {
    NPZ: ('(--input is an .npz with uint8 `image` [N,32,32,3] and `label` [N]; '
          'the `test` split is then a held-out carve of that file.)'),
    IMAGE_FOLDER: ('(--input is a folder of <class_wnid>/*.JPEG sub-folders or flat '
                   '<wnid>_*.JPEG files.)'),
}

# CIFAR-100 fine label -> coarse (superclass) label, in the official order.
CIFAR100_FINE_TO_COARSE = (
    4, 1, 14, 8, 0, 6, 7, 7, 18, 3, 3, 14, 9, 18, 7, 11, 3, 9, 7, 11,
    6, 11, 5, 10, 7, 6, 13, 15, 3, 15, 0, 11, 1, 10, 12, 14, 16, 9, 11, 5,
    5, 19, 8, 8, 15, 13, 14, 17, 18, 10, 16, 4, 17, 4, 2, 0, 17, 4, 18, 17,
    10, 3, 2, 12, 12, 16, 12, 1, 9, 19, 2, 10, 0, 1, 16, 12, 9, 13, 15, 13,
    16, 19, 2, 4, 6, 19, 5, 5, 8, 19, 18, 1, 2, 15, 6, 0, 17, 8, 14, 13)

# TFDS downloads both CIFARs from here; checked first so an offline host fails in seconds.
_TORONTO = ('www.cs.toronto.edu', 443)


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """A dataset's facts. Prepared datasets are the TFDS builder `name`'s directories."""
  name: str
  title: str  # How people write it: 'CIFAR-100'.
  num_classes: int
  image_size: int
  train_split: str
  eval_split: str
  mean: tuple[float, float, float]  # Per-channel RGB statistics of [0, 1] pixels.
  std: tuple[float, float, float]
  augmentation: str  # CIFAR_AUGMENTATION | IMAGENET_AUGMENTATION
  # Small enough to decode whole into host memory and to hold on the accelerators.
  in_memory: bool
  source: str  # NPZ | IMAGE_FOLDER | EMBEDDED
  # The offline command that builds it, `{data_dir}` to be filled in; '' for EMBEDDED.
  prepare_command: str = ''
  # (host, port) TFDS downloads it from, or None where TFDS cannot download it.
  download_host: tuple[str, int] | None = None
  # Archives TFDS builds it from when they are put into <data_dir>/downloads/manual.
  manual_archives: tuple[str, ...] = ()
  sample: str = ''  # An embedded sample of it, which runlocal configs train on.
  coarse_labels: tuple[int, ...] = ()  # Fine -> coarse label, where its TFDS features have one.

  def __post_init__(self):
    # The pipelines augment decoded arrays CIFAR-style and encoded JPEGs ImageNet-style.
    if self.in_memory != (self.augmentation == CIFAR_AUGMENTATION):
      raise ValueError(f'{self.name}: in_memory datasets take CIFAR augmentation, others '
                       'ImageNet augmentation.')
    if (self.source == EMBEDDED) != (not self.prepare_command):
      raise ValueError(f'{self.name}: every dataset but an embedded one has a prepare command.')


def _cifar(name: str, title: str, num_classes: int, mean, std,
           **fields) -> DatasetSpec:
  return DatasetSpec(
      name=name, title=title, num_classes=num_classes, image_size=32, train_split='train',
      eval_split='test', mean=mean, std=std, augmentation=CIFAR_AUGMENTATION, in_memory=True,
      source=NPZ, download_host=_TORONTO, **fields)


SPECS = {spec.name: spec for spec in (
    _cifar('cifar10', 'CIFAR-10', 10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616),
           prepare_command=('python -m dqnn.data.prepare --source=npz --dataset=cifar10 '
                            '--input=/path/to/cifar10/train.npz --data_dir={data_dir}')),
    _cifar('cifar100', 'CIFAR-100', 100, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762),
           prepare_command=('python -m dqnn.data.prepare --source=npz '
                            '--input=/path/to/cifar100/train.npz --data_dir={data_dir}'),
           sample=SAMPLE, coarse_labels=CIFAR100_FINE_TO_COARSE),
    DatasetSpec(
        name=SAMPLE, title='CIFAR-100 sample', num_classes=100, image_size=32,
        train_split='train', eval_split='test', mean=(0.5071, 0.4865, 0.4409),
        std=(0.2673, 0.2564, 0.2762), augmentation=CIFAR_AUGMENTATION, in_memory=True,
        source=EMBEDDED),
    DatasetSpec(
        name='imagenet2012', title='ImageNet', num_classes=1000, image_size=224,
        train_split='train', eval_split='validation', mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225), augmentation=IMAGENET_AUGMENTATION, in_memory=False,
        source=IMAGE_FOLDER,
        prepare_command=('python -m dqnn.data.prepare --source=image_folder '
                         '--input=/path/to/imagenet/images --data_dir={data_dir}'),
        manual_archives=('ILSVRC2012_img_train.tar', 'ILSVRC2012_img_val.tar')),
)}

SUPPORTED_DATASETS = tuple(sorted(SPECS))
# The dataset each `prepare --source` builds unless --dataset names another.
DEFAULT_FOR_SOURCE = {NPZ: 'cifar100', IMAGE_FOLDER: 'imagenet2012'}


def spec(name: str) -> DatasetSpec:
  if name not in SPECS:
    raise ValueError(
        f'Unknown dataset {name!r}; supported: {", ".join(SUPPORTED_DATASETS)}.')
  return SPECS[name]
