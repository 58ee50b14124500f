"""Tests for the tf.data pipelines (dqnn.data.pipeline / datasets / mock)."""

import collections
import hashlib
import os
import pathlib

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

import dqnn.data as data
from dqnn.data import prepare
from dqnn.data import preprocess

tfds.disable_progress_bar()

REPO = pathlib.Path(__file__).resolve().parents[2]
CIFAR_LO = (0 - max(preprocess.CIFAR100_MEAN)) / min(preprocess.CIFAR100_STD)
CIFAR_HI = (1 - min(preprocess.CIFAR100_MEAN)) / min(preprocess.CIFAR100_STD)


def _shared_data() -> pathlib.Path:
  return pathlib.Path(os.environ.get('DQNN_SHARED_DATA') or REPO.parent / 'shared' / 'data')


def _require(rel: str) -> pathlib.Path:
  p = _shared_data() / rel
  if not p.exists():
    pytest.skip(f'shared data {p} is absent (set DQNN_SHARED_DATA to the shared/data folder)')
  return p


def _to_uint8(images, name):
  mean, std = preprocess.NORMALIZATION[name]
  return np.round((images.astype(np.float32) * std + mean) * 255).astype(np.uint8)


def _digest(img_u8):
  return hashlib.sha1(img_u8.tobytes()).hexdigest()


def _collect(batches, name):
  """Valid (mask=True) examples as a Counter of (label, image digest)."""
  out = collections.Counter()
  for b in batches:
    assert b['mask'].dtype == bool and b['label'].dtype == np.int32
    # Padding only at the tail of the host's stream.
    for img, lab in zip(_to_uint8(b['image'][b['mask']], name), b['label'][b['mask']]):
      out[(int(lab), _digest(img))] += 1
    assert not b['image'][~b['mask']].any()
  return out


# ------------------------------------------------------------ no dataset.


def test_fake_iterator_shapes():
  it = data.fake_iterator(global_batch_size=8, image_size=16, num_classes=5,
                          process_count=2)
  b = next(it)
  assert b['image'].shape == (4, 16, 16, 3) and b['image'].dtype == np.float32
  assert b['label'].shape == (4,) and b['label'].dtype == np.int32
  assert ((0 <= b['label']) & (b['label'] < 5)).all()
  with pytest.raises(ValueError, match='multiple of process_count'):
    next(data.fake_iterator(global_batch_size=3, image_size=8, num_classes=2,
                            process_count=2))


def test_missing_imagenet_raises_with_prepare_command(tmp_path):
  with pytest.raises(data.DatasetNotFoundError) as e:
    data.get_dataset_info('imagenet2012', str(tmp_path))
  msg = str(e.value)
  assert isinstance(e.value, ValueError)
  assert 'python -m dqnn.data.prepare --source=image_folder' in msg
  assert f'--data_dir={tmp_path}' in msg
  assert os.path.join(str(tmp_path), 'downloads', 'manual') in msg
  with pytest.raises(data.DatasetNotFoundError):
    data.eval_iterator('imagenet2012', str(tmp_path), global_batch_size=4,
                       process_index=0, process_count=1)


def test_missing_cifar_without_download_raises(tmp_path, monkeypatch):
  monkeypatch.setenv('TFDS_DATA_DIR', str(tmp_path))  # data_dir=None -> env
  with pytest.raises(data.DatasetNotFoundError,
                     match='python -m dqnn.data.prepare --source=npz') as e:
    data.train_iterator('cifar100', None, global_batch_size=4, seed=0,
                        process_index=0, process_count=1)
  assert str(tmp_path) in str(e.value) and 'download=True' in str(e.value)
  assert not (tmp_path / 'cifar100').exists() or not any((tmp_path / 'cifar100').rglob('*.tfrecord*'))


# ------------------------------------------------------------------ mock.


@pytest.mark.parametrize('name,size', [('cifar100', 32), ('imagenet2012', 48)])
def test_mock_dataset_offline(name, size):
  with data.mock_dataset(name, num_examples=12, num_eval_examples=7) as d:
    assert os.environ['TFDS_DATA_DIR'] == d
    info = data.get_dataset_info(name)
    assert (info.num_train, info.num_eval) == (12, 7)
    b = next(data.train_iterator(name, None, global_batch_size=4, seed=1,
                                 image_size=size, process_index=0, process_count=1))
    assert b['image'].shape == (4, size, size, 3) and b['image'].dtype == np.float32
    per_host = [list(data.eval_iterator(name, d, global_batch_size=6, image_size=size,
                                        process_index=i, process_count=3))
                for i in range(3)]
    assert [len(h) for h in per_host] == [2, 2, 2]  # ceil(ceil(7/3) / 2)
    assert sum(int(b['mask'].sum()) for h in per_host for b in h) == 7
  assert os.environ.get('TFDS_DATA_DIR') != d


# ------------------------------------------------------------ CIFAR slice.


@pytest.fixture(scope='module')
def cifar(tmp_path_factory):
  npz = _require('cifar100/train.npz')
  d = tmp_path_factory.mktemp('cifar')
  prepare.prepare_cifar100_npz(str(npz), str(d), holdout_per_class=3, limit_per_class=5)
  with np.load(npz) as f:
    images, labels = f['image'], f['label']
  _, test_idx = prepare.carve_npz_splits(labels.astype(np.int64), 3, 5)
  expected = collections.Counter((int(labels[i]), _digest(images[i])) for i in test_idx)
  return str(d), expected


def test_cifar_info_and_train_batches(cifar):
  d, _ = cifar
  info = data.get_dataset_info('cifar100', d)
  assert info == data.DatasetInfo('cifar100', 100, 32, 'train', 'test', 200, 300)
  it = data.train_iterator('cifar100', d, global_batch_size=64, seed=3,
                           process_index=0, process_count=1)
  batches = [next(it) for _ in range(4)]  # > 1 epoch of 200: repeats forever.
  for b in batches:
    assert b['image'].shape == (64, 32, 32, 3) and b['image'].dtype == np.float32
    assert b['label'].dtype == np.int32 and b['label'].shape == (64,)
    assert ((0 <= b['label']) & (b['label'] < 100)).all()
    assert CIFAR_LO - 1e-4 <= b['image'].min() and b['image'].max() <= CIFAR_HI + 1e-4
    assert abs(float(b['image'].mean())) < 0.6
  # Deterministic in seed, different across seeds.
  again = next(data.train_iterator('cifar100', d, global_batch_size=64, seed=3,
                                   process_index=0, process_count=1))
  other = next(data.train_iterator('cifar100', d, global_batch_size=64, seed=4,
                                   process_index=0, process_count=1))
  np.testing.assert_array_equal(again['image'], batches[0]['image'])
  assert not np.array_equal(other['image'], batches[0]['image'])
  # bfloat16 option.
  bf = next(data.train_iterator('cifar100', d, global_batch_size=8, seed=3,
                                dtype='bfloat16', process_index=0, process_count=1))
  assert bf['image'].dtype == tf.bfloat16.as_numpy_dtype


def test_cifar_eval_exactly_once_single_host(cifar):
  d, expected = cifar
  batches = list(data.eval_iterator('cifar100', d, global_batch_size=64,
                                    process_index=0, process_count=1))
  assert len(batches) == 5  # ceil(300 / 64), last one padded, not dropped.
  assert all(b['image'].shape == (64, 32, 32, 3) for b in batches)
  assert int(batches[-1]['mask'].sum()) == 300 - 4 * 64
  assert _collect(batches, 'cifar100') == expected


def test_cifar_eval_sharded_two_hosts(cifar):
  d, expected = cifar
  per_host = [list(data.eval_iterator('cifar100', d, global_batch_size=42,
                                      process_index=i, process_count=2))
              for i in range(2)]
  assert len(per_host[0]) == len(per_host[1]) == 8  # ceil(150 / 21)
  assert all(b['label'].shape == (21,) for h in per_host for b in h)
  seen = [_collect(h, 'cifar100') for h in per_host]
  assert sum(seen[0].values()) == sum(seen[1].values()) == 150
  assert not set(seen[0]) & set(seen[1])
  assert seen[0] + seen[1] == expected


def test_cifar_train_hosts_read_disjoint_shards(cifar):
  d, _ = cifar
  labels = []
  for i in range(2):
    it = data.train_iterator('cifar100', d, global_batch_size=200, seed=0,
                             process_index=i, process_count=2)
    b = next(it)  # one full epoch of this host's 100 examples
    assert b['image'].shape == (100, 32, 32, 3)
    labels.append(collections.Counter(b['label'].tolist()))
  # Train split has 2 examples per class; together the hosts cover all 200.
  assert labels[0] + labels[1] == collections.Counter({c: 2 for c in range(100)})


# --------------------------------------------------------- ImageNet slice.


def make_imagenet_subset(folder: pathlib.Path, dst: pathlib.Path) -> dict:
  """Symlinks 10 RGB + 3 grayscale samples into `dst` (flat <wnid>_*.JPEG)."""
  from PIL import Image
  dst.mkdir(parents=True)
  files = sorted(folder.iterdir())[:10]
  gray = []
  for p in sorted(folder.iterdir()):
    with Image.open(p) as im:
      if im.mode == 'L':
        gray.append(p)
    if len(gray) == 3:
      break
  for p in files + gray:
    (dst / p.name).symlink_to(p)
  return {'n': len(files) + len(gray), 'gray': [p.name for p in gray]}


@pytest.fixture(scope='module')
def imagenet(tmp_path_factory):
  src = _require('imagenet_sample')
  root = tmp_path_factory.mktemp('imnet')
  meta = make_imagenet_subset(src, root / 'flat')
  prepare.prepare_imagenet_folder(str(root / 'flat'), str(root / 'tfds'),
                                  eval_fraction=0.2)
  return root, meta


def test_imagenet_grayscale_decodes_to_rgb(imagenet):
  root, meta = imagenet
  for fname in meta['gray']:
    encoded = tf.constant((root / 'flat' / fname).read_bytes())
    img = preprocess.imagenet_eval(encoded, 64).numpy()
    assert img.shape == (64, 64, 3)
    np.testing.assert_array_equal(img[..., 0], img[..., 2])
    crop = preprocess.imagenet_train(encoded, tf.constant([1, 2], tf.int64), 40).numpy()
    assert crop.shape == (40, 40, 3)


def test_imagenet_train_and_eval_batches(imagenet):
  root, meta = imagenet
  d = str(root / 'tfds')
  wnids = prepare.writer.imagenet_wnids()
  all_labels = {wnids.index(n.split('_')[0]) for n in os.listdir(root / 'flat')}
  info = data.get_dataset_info('imagenet2012', d)
  assert (info.num_classes, info.num_train, info.num_eval, info.image_size) == (1000, 11, 2, 224)
  b = next(data.train_iterator('imagenet2012', d, global_batch_size=8, seed=0,
                               image_size=64, process_index=0, process_count=1))
  assert b['image'].shape == (8, 64, 64, 3) and b['image'].dtype == np.float32
  assert set(b['label'].tolist()) <= all_labels
  assert np.isfinite(b['image']).all() and -2.2 < b['image'].min() and b['image'].max() < 2.7
  ev = list(data.eval_iterator('imagenet2012', d, global_batch_size=3, image_size=72,
                               process_index=0, process_count=1))
  assert [e['image'].shape for e in ev] == [(3, 72, 72, 3)]
  assert sum(int(e['mask'].sum()) for e in ev) == 2
  got = sorted(int(l) for e in ev for l, m in zip(e['label'], e['mask']) if m)
  val = tfds.builder('imagenet2012', data_dir=d).as_dataset('validation')
  assert got == sorted(int(x['label']) for x in tfds.as_numpy(val))
