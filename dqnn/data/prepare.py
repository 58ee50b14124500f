r"""Offline prepare tool: builds TFDS-format datasets from local files.

Writes `<data_dir>/<dataset>/<version>/` (e.g. cifar100, cifar10, imagenet2012)
with the same features as the real TFDS builders (see `dqnn.data.writer`), so
the pipelines read prepared and TFDS-downloaded data identically. Which
`--source` builds which dataset is its record's `source` (`dqnn.data.specs`).

CIFAR-100 (default) or `--dataset=cifar10` from an .npz (uint8 `image`
[N,32,32,3] RGB, `label` [N] (fine) labels):

  python -m dqnn.data.prepare --source=npz \
      --input=../shared/data/cifar100/train.npz --data_dir=$TFDS_DATA_DIR

  Per class, the examples are taken in file order (first `--limit_per_class`
  of them if set); the FIRST `--holdout_per_class` (default 50) go to split
  `test`, the rest to `train`. NOTE: this `test` split is a validation split
  carved from the training file, NOT the official test set. `id` is
  '<split>_<index in the npz>'; CIFAR-100's `coarse_label` is derived from the
  fine label.

ImageNet-2012 from a folder (`DIR/<wnid>/*.JPEG` sub-folders or flat
`DIR/<wnid>_*.JPEG` files):

  python -m dqnn.data.prepare --source=image_folder \
      --input=../shared/data/imagenet_sample --data_dir=$TFDS_DATA_DIR

  label = index of the wnid in the sorted 1000 ILSVRC-2012 wnids (the list
  shipped in tensorflow_datasets). Files are ordered by (label, file name);
  `--limit=N` keeps the first N files in sorted path order. Split `validation`:
  with `--holdout_per_class=K`, the first K files of each class; otherwise
  (default) every round(1/--eval_fraction)-th file of the ordered list
  (positions stride-1, 2*stride-1, ...; every 5th for the default 0.2).
  JPEG bytes are stored as-is (grayscale stays grayscale; the pipeline decodes
  with 3 channels); non-JPEG and CMYK/YCCK files are re-encoded as RGB JPEG
  (`--jpeg_quality`, default 95), as TFDS does for the CMYK files of the real ImageNet.
  Every file is decoded once here, so an unreadable one stops prepare with its name.
  `--max_short_side=256` stores larger images resized to that shorter side (as fast
  ImageNet trainers do), so training decodes fewer pixels; `--jpeg_quality=90` with it decodes
  ~17-20% faster again and stores ~29% less (docs/results.md).

Output is array_record (read without TensorFlow). Refuses to overwrite an existing prepared
dataset unless `--overwrite`; the old one is replaced only once the new one is complete.
"""

from __future__ import annotations

import collections
import functools
import io
import os
import signal
import sys

import numpy as np

from dqnn.data import specs
from dqnn.data import writer

# Pillow's quality for the images prepare re-encodes (resized, CMYK, non-JPEG).
DEFAULT_JPEG_QUALITY = 95

_IMAGE_EXTS = ('.jpg', '.jpeg', '.png', '.bmp', '.gif', '.webp', '.tif', '.tiff')

CIFAR_HOLDOUT_NOTE = (
    "NOTE: {name} 'test' is a held-out validation carve of the input file "
    '(first {k} images per class in file order), NOT the official {title} '
    'test set.')


def _summary(name, out, counts):
  parts = ', '.join(f'{s}={n}' for s, n in counts.items())
  return f'Prepared {name}: splits {parts} -> {out}'


# ------------------------------------------------------------------ CIFAR.


def read_npz(path: str, num_classes: int = 100) -> tuple[np.ndarray, np.ndarray]:
  """(images uint8 [N,32,32,3], labels int64 [N] in [0, num_classes)) from `path`, or one error
  naming the problem."""
  try:
    arrays = np.load(path)
  except (OSError, EOFError, ValueError) as e:  # Not an .npz, truncated, or a pickle.
    raise ValueError(f'{path}: not a readable .npz file ({e}).') from e
  if not isinstance(arrays, np.lib.npyio.NpzFile):
    raise ValueError(f'{path}: a single .npy array, not an .npz with `image` and `label`.')
  with arrays as f:
    missing = [k for k in ('image', 'label') if k not in f.files]
    if missing:
      raise ValueError(f'{path}: missing array(s) {missing}; found {sorted(f.files)}. '
                       'Expected uint8 `image` [N,32,32,3] and integer `label` [N].')
    images, labels = f['image'], f['label']
  if images.ndim != 4 or images.shape[1:] != (32, 32, 3) or images.dtype != np.uint8:
    raise ValueError(f'{path}: expected uint8 images [N,32,32,3], got {images.dtype} '
                     f'{images.shape}.')
  if not len(images):
    raise ValueError(f'{path}: holds no images.')
  if not np.issubdtype(labels.dtype, np.integer):
    raise ValueError(f'{path}: labels must be integers, got {labels.dtype} (converting would '
                     'silently truncate them).')
  if labels.shape != images.shape[:1] or labels.min() < 0 or labels.max() >= num_classes:
    raise ValueError(f'{path}: expected labels [{len(images)}] in [0, {num_classes}), got shape '
                     f'{labels.shape}, range [{labels.min()}, {labels.max()}].')
  return images, labels.astype(np.int64)


def carve_npz_splits(labels: np.ndarray, holdout_per_class: int,
                     limit_per_class: int | None = None):
  """Returns (train_indices, test_indices) into the npz, both sorted."""
  train, test = [], []
  for c in np.unique(labels):
    idx = np.flatnonzero(labels == c)  # file order
    if limit_per_class is not None:
      idx = idx[:limit_per_class]
    test.append(idx[:holdout_per_class])
    train.append(idx[holdout_per_class:])
  train = np.sort(np.concatenate(train)) if train else np.zeros(0, np.int64)
  test = np.sort(np.concatenate(test)) if test else np.zeros(0, np.int64)
  return train, test


def prepare_npz(input_path: str, data_dir: str, *, dataset: str,
                holdout_per_class: int = 50,
                limit_per_class: int | None = None,
                overwrite: bool = False) -> dict:
  """Builds `dataset` (a record with source 'npz') from an .npz, carving its eval split."""
  dataset_spec = _spec_for_source(dataset, specs.NPZ)
  images, labels = read_npz(input_path, dataset_spec.num_classes)
  train_idx, test_idx = carve_npz_splits(labels, holdout_per_class, limit_per_class)
  if not len(train_idx) or not len(test_idx):
    raise ValueError(
        f'Empty split (train={len(train_idx)}, test={len(test_idx)}); check '
        '--holdout_per_class / --limit_per_class.')

  train_split, eval_split = dataset_spec.train_split, dataset_spec.eval_split

  def gen(split, indices):
    def _gen():
      for i in indices:
        key = f'{split}_{int(i):05d}'
        yield key, writer.npz_example(dataset_spec, key, images[i], labels[i])
    return _gen

  out = writer.write_tfds_dataset(
      dataset, data_dir,
      {train_split: gen(train_split, train_idx), eval_split: gen(eval_split, test_idx)},
      overwrite=overwrite)
  return {'name': dataset, 'path': out,
          'counts': {train_split: len(train_idx), eval_split: len(test_idx)}}


prepare_cifar100_npz = functools.partial(prepare_npz, dataset=specs.DEFAULT_FOR_SOURCE[specs.NPZ])


def _spec_for_source(dataset: str, source: str) -> specs.DatasetSpec:
  dataset_spec = specs.spec(dataset)
  if dataset_spec.source != source:
    buildable = [name for name, s in specs.SPECS.items() if s.source == source]
    raise ValueError(f'--source={source} cannot build {dataset!r}; it builds '
                     f'{", ".join(buildable)} (--dataset).')
  return dataset_spec


# --------------------------------------------------------------- ImageNet.


def list_image_folder(input_dir: str, limit: int | None = None):
  """Returns sorted [(label, wnid, path)] for class sub-folders or flat files."""
  wnid_to_label = {w: i for i, w in enumerate(writer.imagenet_wnids())}
  entries = []
  for root, dirs, files in os.walk(input_dir):
    dirs.sort()
    for f in sorted(files):
      if f.lower().endswith(_IMAGE_EXTS):
        entries.append(os.path.join(root, f))
  entries.sort(key=lambda p: os.path.relpath(p, input_dir))
  if limit is not None:
    entries = entries[:limit]
  out = []
  for p in entries:
    rel = os.path.relpath(p, input_dir)
    parts = rel.split(os.sep)
    wnid = parts[-2] if len(parts) > 1 else parts[0].split('_')[0]
    if wnid not in wnid_to_label:
      raise ValueError(
          f'{rel}: {wnid!r} is not an ILSVRC-2012 wnid (expected '
          '<wnid>/<file> sub-folders or <wnid>_<name> files).')
    out.append((wnid_to_label[wnid], wnid, p))
  if not out:
    raise ValueError(f'No images found under {input_dir}.')
  out.sort(key=lambda t: (t[0], os.path.basename(t[2])))
  return out


def carve_image_splits(items, *, holdout_per_class: int | None = None,
                       eval_fraction: float = 0.2):
  """Deterministic (train, validation) split of the ordered `items`."""
  train, val = [], []
  if holdout_per_class:
    seen = collections.Counter()
    for it in items:
      (val if seen[it[0]] < holdout_per_class else train).append(it)
      seen[it[0]] += 1
  else:
    if not 0 < eval_fraction < 1:
      raise ValueError('--eval_fraction must be in (0, 1).')
    stride = max(2, round(1 / eval_fraction))
    for pos, it in enumerate(items):
      (val if pos % stride == stride - 1 else train).append(it)
  return train, val


def jpeg_bytes(path: str, max_short_side: int | None = None,
               jpeg_quality: int = DEFAULT_JPEG_QUALITY) -> bytes:
  """The file's bytes if it is an RGB/grayscale JPEG, else an RGB JPEG re-encoding at
  `jpeg_quality`.

  The image is decoded completely first, so a truncated or corrupt file stops `prepare` with its
  name instead of a decoder error later in training. With `max_short_side`, larger images are
  stored resized so their shorter side is that many pixels: training then decodes far fewer
  pixels per image.
  """
  from PIL import Image  # pylint: disable=g-import-not-at-top
  with open(path, 'rb') as f:
    data = f.read()
  try:
    with Image.open(io.BytesIO(data)) as im:
      im.load()
      resize = max_short_side is not None and min(im.size) > max_short_side
      if im.format == 'JPEG' and im.mode in ('L', 'RGB') and not resize:
        return data
      out = im.convert('RGB') if im.mode not in ('L', 'RGB') else im
      if resize:
        out = resized_to_short_side(out, max_short_side)
      buf = io.BytesIO()
      out.save(buf, format='JPEG', quality=jpeg_quality)
      return buf.getvalue()
  except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
    raise ValueError(f'{path}: not a readable image ({e}); remove or replace the file.') from e


def resized_to_short_side(image, short_side: int):
  """A Pillow image resized (bicubic) so that its shorter side is `short_side` pixels."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  scale = short_side / min(image.size)
  return image.resize((max(1, round(image.size[0] * scale)), max(1, round(image.size[1] * scale))),
                      Image.BICUBIC)


def prepare_imagenet_folder(input_dir: str, data_dir: str, *,
                            holdout_per_class: int | None = None,
                            eval_fraction: float = 0.2,
                            limit: int | None = None,
                            max_short_side: int | None = None,
                            jpeg_quality: int = DEFAULT_JPEG_QUALITY,
                            overwrite: bool = False) -> dict:
  if not 1 <= jpeg_quality <= 100:
    raise ValueError(f'--jpeg_quality must be in 1..100 (got {jpeg_quality}).')
  dataset_spec = _spec_for_source(specs.DEFAULT_FOR_SOURCE[specs.IMAGE_FOLDER], specs.IMAGE_FOLDER)
  items = list_image_folder(input_dir, limit)
  train, val = carve_image_splits(items, holdout_per_class=holdout_per_class,
                                  eval_fraction=eval_fraction)
  if not train or not val:
    raise ValueError(f'Empty split (train={len(train)}, validation={len(val)}).')

  def gen(split_items):
    def _gen():
      for label, _, p in split_items:
        fname = os.path.basename(p)
        key = os.path.relpath(p, input_dir)  # unique, even across sub-folders
        image = jpeg_bytes(p, max_short_side, jpeg_quality)
        yield key, {'image': io.BytesIO(image), 'label': label, 'file_name': fname}
    return _gen

  name, train_split, eval_split = (dataset_spec.name, dataset_spec.train_split,
                                   dataset_spec.eval_split)
  out = writer.write_tfds_dataset(
      name, data_dir, {train_split: gen(train), eval_split: gen(val)}, overwrite=overwrite)
  return {'name': name, 'path': out,
          'counts': {train_split: len(train), eval_split: len(val)}}


# ------------------------------------------------------------------- CLI.


def main(argv):
  from absl import flags  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from dqnn.data.datasets import resolve_data_dir  # pylint: disable=g-import-not-at-top
  del argv
  f = flags.FLAGS
  if not f.verbose:
    tfds.disable_progress_bar()
  # SIGTERM (a scheduler's kill) unwinds like Ctrl-C, so the staging folder is removed.
  signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
  data_dir = resolve_data_dir(f.data_dir)
  dataset = f.dataset or specs.DEFAULT_FOR_SOURCE[f.source]
  try:
    if f.source == specs.NPZ:
      holdout = 50 if f.holdout_per_class is None else f.holdout_per_class
      res = prepare_npz(f.input, data_dir, dataset=dataset, holdout_per_class=holdout,
                        limit_per_class=f.limit_per_class, overwrite=f.overwrite)
      print(CIFAR_HOLDOUT_NOTE.format(name=dataset, title=specs.spec(dataset).title, k=holdout))
    else:
      _spec_for_source(dataset, specs.IMAGE_FOLDER)
      res = prepare_imagenet_folder(f.input, data_dir,
                                    holdout_per_class=f.holdout_per_class,
                                    eval_fraction=f.eval_fraction, limit=f.limit,
                                    max_short_side=f.max_short_side,
                                    jpeg_quality=f.jpeg_quality, overwrite=f.overwrite)
  except (writer.DatasetExistsError, ValueError, FileNotFoundError) as e:
    print(f'ERROR: {e}', file=sys.stderr)
    return 1
  print(_summary(res['name'], res['path'], res['counts']))
  return 0


def _define_flags():
  from absl import flags  # pylint: disable=g-import-not-at-top
  flags.DEFINE_enum('source', None, [specs.NPZ, specs.IMAGE_FOLDER],
                    'npz -> cifar100 (or --dataset=cifar10); image_folder -> imagenet2012.')
  flags.DEFINE_enum('dataset', None,
                    [name for name, s in specs.SPECS.items() if s.source != specs.EMBEDDED],
                    'The dataset to build (default: the one --source builds by default).')
  flags.DEFINE_string('input', None, '.npz file or image folder.')
  flags.DEFINE_string('data_dir', None,
                      'TFDS data_dir (default: $TFDS_DATA_DIR, else TFDS default).')
  flags.DEFINE_integer('holdout_per_class', None,
                       'Eval images per class (npz default 50; image_folder: '
                       'if set, used instead of --eval_fraction).')
  flags.DEFINE_float('eval_fraction', 0.2,
                     'image_folder: every round(1/f)-th file goes to validation.')
  flags.DEFINE_integer('limit_per_class', None, 'npz: use only the first N per class.')
  flags.DEFINE_integer('limit', None, 'image_folder: use only the first N files.')
  flags.DEFINE_integer('max_short_side', None,
                       'image_folder: store images resized to this shorter side (e.g. 256 for '
                       '224 training); cuts decode cost per training image.')
  flags.DEFINE_integer('jpeg_quality', DEFAULT_JPEG_QUALITY,
                       'image_folder: JPEG quality of the images prepare re-encodes (resized, '
                       'CMYK, non-JPEG); 90 decodes ~17-20% faster than 95 and stores ~29% less.')
  flags.DEFINE_bool('overwrite', False, 'Replace an existing prepared dataset.')
  flags.DEFINE_bool('verbose', False, 'Show TFDS progress bars.')
  flags.mark_flags_as_required(['source', 'input'])


if __name__ == '__main__':
  from absl import app  # pylint: disable=g-import-not-at-top
  _define_flags()
  app.run(main)
