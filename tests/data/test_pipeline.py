"""Tests for the grain pipelines (dqnn.data.pipeline / datasets / mock)."""

import collections
import hashlib
import os
import pathlib

import numpy as np
import pytest
import tensorflow_datasets as tfds

import dqnn.data as data
from dqnn.data import pipeline
from dqnn.data import prepare
from dqnn.data import transforms

tfds.disable_progress_bar()

REPO = pathlib.Path(__file__).resolve().parents[2]


def _shared_data() -> pathlib.Path:
  return pathlib.Path(os.environ.get('DQNN_SHARED_DATA') or REPO.parent / 'shared' / 'data')


def _require(rel: str) -> pathlib.Path:
  p = _shared_data() / rel
  if not p.exists():
    pytest.skip(f'shared data {p} is absent (set DQNN_SHARED_DATA to the shared/data folder)')
  return p


def _digest(img_u8):
  return hashlib.sha1(np.ascontiguousarray(img_u8).tobytes()).hexdigest()


def _collect(batches):
  """Valid (mask=True) examples as a Counter of (label, image digest)."""
  out = collections.Counter()
  for b in batches:
    assert b['mask'].dtype == bool and b['label'].dtype == np.int32
    assert b['image'].dtype == np.uint8
    for img, lab in zip(b['image'][b['mask']], b['label'][b['mask']]):
      out[(int(lab), _digest(img))] += 1
    assert not b['image'][~b['mask']].any()
  return out


def _take(dataset, n):
  it = iter(dataset)
  return [next(it) for _ in range(n)]


# ------------------------------------------------------------ no dataset.


def test_fake_batches_shapes():
  it = data.fake_batches(global_batch_size=8, image_size=16, num_classes=5, process_count=2)
  b = next(it)
  assert b['image'].shape == (4, 16, 16, 3) and b['image'].dtype == np.uint8
  assert b['label'].shape == (4,) and b['label'].dtype == np.int32
  assert ((0 <= b['label']) & (b['label'] < 5)).all()
  with pytest.raises(ValueError, match='multiple of process_count'):
    next(data.fake_batches(global_batch_size=3, image_size=8, num_classes=2, process_count=2))


def test_missing_imagenet_raises_with_prepare_command(tmp_path):
  with pytest.raises(data.DatasetNotFoundError) as e:
    data.get_dataset_info('imagenet2012', str(tmp_path))
  msg = str(e.value)
  assert isinstance(e.value, ValueError)
  assert 'python -m dqnn.data.prepare --source=image_folder' in msg
  assert f'--data_dir={tmp_path}' in msg
  assert os.path.join(str(tmp_path), 'downloads', 'manual') in msg


def test_missing_cifar_without_download_raises(tmp_path, monkeypatch):
  monkeypatch.setenv('TFDS_DATA_DIR', str(tmp_path))  # data_dir=None -> env
  with pytest.raises(data.DatasetNotFoundError,
                     match='python -m dqnn.data.prepare --source=npz') as e:
    data.get_dataset_info('cifar100', None)
  assert str(tmp_path) in str(e.value) and 'download=True' in str(e.value)
  assert data.SAMPLE in str(e.value)
  assert not (tmp_path / 'cifar100').exists()


def test_download_offline_fails_fast_with_a_clear_message(tmp_path, monkeypatch):
  from dqnn.data import datasets

  def unreachable(address, timeout):
    assert timeout <= 5
    raise OSError('network is unreachable')

  monkeypatch.setattr(datasets.importlib.util, 'find_spec', lambda name: object())
  monkeypatch.setattr(datasets.socket, 'create_connection', unreachable)
  with pytest.raises(data.DatasetNotFoundError, match='no network') as e:
    data.get_dataset_info('cifar100', str(tmp_path), download=True)
  assert 'python -m dqnn.data.prepare --source=npz' in str(e.value)
  assert 'download=True' not in str(e.value)


def test_download_without_tensorflow_names_the_extra(tmp_path, monkeypatch):
  from dqnn.data import datasets
  monkeypatch.setattr(datasets.importlib.util, 'find_spec', lambda name: None)
  with pytest.raises(data.DatasetNotFoundError, match=r"pip install -e '\.\[tf\]'") as e:
    data.get_dataset_info('cifar100', str(tmp_path), download=True)
  assert 'download=True' not in str(e.value)  # It is set already; the fix is the extra.


def test_embedded_sample():
  info = data.get_dataset_info(data.SAMPLE)
  assert info == data.DatasetInfo(data.SAMPLE, 100, 32, 'train', 'test', 500, 100)
  batches = list(data.eval_batches(info, None, global_batch_size=64, process_index=0,
                                   process_count=1))
  labels = np.concatenate([b['label'][b['mask']] for b in batches])
  assert sorted(labels.tolist()) == list(range(100))  # one held-out image per class
  b = _take(data.train_dataset(info, None, global_batch_size=50, seed=0, process_index=0,
                               process_count=1), 1)[0]
  assert b['image'].shape == (50, 32, 32, 3) and b['image'].dtype == np.uint8


# ------------------------------------------------------------------ mock.


@pytest.mark.parametrize('name,size', [('cifar100', 32), ('imagenet2012', 48)])
def test_mock_dataset_offline(name, size):
  with data.mock_dataset(name, num_examples=12, num_eval_examples=7) as d:
    assert os.environ['TFDS_DATA_DIR'] == d
    info = data.get_dataset_info(name)
    assert (info.num_train, info.num_eval) == (12, 7)
    b = _take(data.train_dataset(info, None, global_batch_size=4, seed=1, image_size=size,
                                 process_index=0, process_count=1), 1)[0]
    assert b['image'].shape == (4, size, size, 3) and b['image'].dtype == np.uint8
    per_host = [list(data.eval_batches(info, d, global_batch_size=6, image_size=size,
                                       process_index=i, process_count=3))
                for i in range(3)]
    assert [len(h) for h in per_host] == [2, 2, 2]  # ceil(ceil(7/3) / 2)
    assert sum(int(b['mask'].sum()) for h in per_host for b in h) == 7
  assert os.environ.get('TFDS_DATA_DIR') != d


def test_shuffled_batches_are_pure_epoch_permutations():
  batches = pipeline.ShuffledBatches(num_examples=10, batch_size=3, seed=5)
  assert batches.batches_per_epoch == 3
  first = [batches[k] for k in range(6)]
  for epoch in (first[:3], first[3:]):  # 9 distinct examples an epoch; 1 waits for another.
    held = np.concatenate(epoch)
    assert len(set(held.tolist())) == 9 and held.min() >= 0 and held.max() < 10
  assert not np.array_equal(np.concatenate(first[:3]), np.concatenate(first[3:]))
  again = pipeline.ShuffledBatches(num_examples=10, batch_size=3, seed=5)
  for k in (4, 0, 5):  # Any order: batch k is a function of (seed, k) alone.
    np.testing.assert_array_equal(again[k], first[k])
  other = pipeline.ShuffledBatches(num_examples=10, batch_size=3, seed=6)
  assert not all(np.array_equal(other[k], first[k]) for k in range(3))
  with pytest.raises(ValueError, match='fewer than one batch'):
    pipeline.ShuffledBatches(num_examples=2, batch_size=3, seed=0)


def test_threads_share_the_cores_among_worker_processes(monkeypatch):
  monkeypatch.setattr(pipeline.os, 'sched_getaffinity', lambda pid: set(range(8)))
  assert [pipeline.threads_per_process(w) for w in (0, 1, 2, 3, 5, 16)] == [8, 8, 4, 2, 0, 0]


def test_records_parse_as_tfds_deserializes_them():
  from dqnn.data import datasets
  with data.mock_dataset('imagenet2012', num_examples=6, num_eval_examples=2) as d:
    info = data.get_dataset_info('imagenet2012', d)
    ours = datasets.open_split(info.name, d, info.train_split, 1, 5)
    tfds_source = tfds.data_source('imagenet2012', split='train[1:5]', data_dir=d,
                                   decoders={'image': tfds.decode.SkipDecoding()})
    assert len(ours) == len(tfds_source) == 4
    for got, want in zip(ours.__getitems__([0, 1, 2, 3]), tfds_source.__getitems__([0, 1, 2, 3])):
      assert set(got) == set(want) and got['image'] == want['image']
      assert got['file_name'] == want['file_name'] and got['label'] == int(want['label'])


def test_imagenet_train_resumes_from_saved_state_exactly():
  with data.mock_dataset('imagenet2012', num_examples=10, num_eval_examples=2) as d:
    info = data.get_dataset_info('imagenet2012', d)
    ds = data.train_dataset(info, d, global_batch_size=4, seed=3, image_size=24,
                            process_index=0, process_count=1)
    uninterrupted = _take(ds, 6)  # 2 batches an epoch: crosses two epoch boundaries.
    it = iter(ds)
    for _ in range(3):
      next(it)
    resumed = iter(ds)
    resumed.set_state(it.get_state())
    for want in uninterrupted[3:]:
      got = next(resumed)
      np.testing.assert_array_equal(got['image'], want['image'])
      np.testing.assert_array_equal(got['label'], want['label'])


def test_tfrecord_dataset_gets_conversion_command(tmp_path):
  with data.mock_dataset('cifar100', num_examples=4, data_dir=str(tmp_path)):
    pass
  version_dir = next((tmp_path / 'cifar100').iterdir())
  info_file = version_dir / 'dataset_info.json'
  info_file.write_text(info_file.read_text().replace('"array_record"', '"tfrecord"'))
  with pytest.raises(data.DatasetNotFoundError, match='tfds convert_format'):
    data.get_dataset_info('cifar100', str(tmp_path))


# ------------------------------------------------------------ CIFAR slice.


@pytest.fixture(scope='session')
def cifar(tmp_path_factory):
  npz = _require('cifar100/train.npz')
  d = tmp_path_factory.mktemp('cifar')
  prepare.prepare_cifar100_npz(str(npz), str(d), holdout_per_class=3, limit_per_class=5)
  with np.load(npz) as f:
    images, labels = f['image'], f['label']
  train_idx, test_idx = prepare.carve_npz_splits(labels.astype(np.int64), 3, 5)
  expected = collections.Counter((int(labels[i]), _digest(images[i])) for i in test_idx)
  return str(d), expected, images[train_idx]


def test_cifar_prepared_losslessly(cifar):
  d, _, train_images = cifar
  source = tfds.data_source('cifar100', split='train', data_dir=d)
  stored = np.stack([source[i]['image'] for i in range(len(source))])
  assert sorted(map(_digest, stored)) == sorted(map(_digest, train_images))


def test_cifar_train_batches(cifar):
  d, _, _ = cifar
  info = data.get_dataset_info('cifar100', d)
  assert info == data.DatasetInfo('cifar100', 100, 32, 'train', 'test', 200, 300)
  ds = data.train_dataset(info, d, global_batch_size=64, seed=3, process_index=0,
                          process_count=1)
  batches = _take(ds, 4)  # > 1 epoch of 200: repeats forever.
  for b in batches:
    assert b['image'].shape == (64, 32, 32, 3) and b['image'].dtype == np.uint8
    assert b['label'].dtype == np.int32 and b['label'].shape == (64,)
    assert ((0 <= b['label']) & (b['label'] < 100)).all()
  # Deterministic in seed, different across seeds.
  again = _take(data.train_dataset(info, d, global_batch_size=64, seed=3, process_index=0,
                                   process_count=1), 1)[0]
  other = _take(data.train_dataset(info, d, global_batch_size=64, seed=4, process_index=0,
                                   process_count=1), 1)[0]
  np.testing.assert_array_equal(again['image'], batches[0]['image'])
  assert not np.array_equal(other['image'], batches[0]['image'])


def test_cifar_train_resumes_from_saved_state_exactly(cifar):
  d, _, _ = cifar
  info = data.get_dataset_info('cifar100', d)
  ds = data.train_dataset(info, d, global_batch_size=48, seed=1, process_index=0,
                          process_count=1)
  uninterrupted = _take(ds, 7)  # crosses an epoch boundary (200 / 48)
  it = iter(ds)
  for _ in range(3):
    next(it)
  state = it.get_state()
  resumed = iter(ds)
  resumed.set_state(state)
  for want in uninterrupted[3:]:
    got = next(resumed)
    np.testing.assert_array_equal(got['image'], want['image'])
    np.testing.assert_array_equal(got['label'], want['label'])


def test_cifar_epochs_are_permutations(cifar):
  d, _, _ = cifar
  info = data.get_dataset_info('cifar100', d)
  ds = data.train_dataset(info, d, global_batch_size=100, seed=0, process_index=0,
                          process_count=1)
  epochs = [np.concatenate([b['label'] for b in pair]) for pair in zip(*[iter(_take(ds, 4))] * 2)]
  for labels in epochs:  # 2 examples per class in the 200-example train split.
    assert collections.Counter(labels.tolist()) == collections.Counter(
        {c: 2 for c in range(100)})


def test_cifar_eval_exactly_once_single_host(cifar):
  d, expected, _ = cifar
  info = data.get_dataset_info('cifar100', d)
  batches = list(data.eval_batches(info, d, global_batch_size=64, process_index=0,
                                   process_count=1))
  assert len(batches) == 5  # ceil(300 / 64), last one padded, not dropped.
  assert all(b['image'].shape == (64, 32, 32, 3) for b in batches)
  assert int(batches[-1]['mask'].sum()) == 300 - 4 * 64
  assert _collect(batches) == expected


def test_cifar_eval_sharded_two_hosts(cifar):
  d, expected, _ = cifar
  info = data.get_dataset_info('cifar100', d)
  per_host = [list(data.eval_batches(info, d, global_batch_size=42, process_index=i,
                                     process_count=2))
              for i in range(2)]
  assert len(per_host[0]) == len(per_host[1]) == 8  # ceil(150 / 21)
  assert all(b['label'].shape == (21,) for h in per_host for b in h)
  seen = [_collect(h) for h in per_host]
  assert sum(seen[0].values()) == sum(seen[1].values()) == 150
  assert not set(seen[0]) & set(seen[1])
  assert seen[0] + seen[1] == expected


def test_cifar_train_hosts_read_disjoint_shards(cifar):
  d, _, _ = cifar
  info = data.get_dataset_info('cifar100', d)
  labels = []
  for i in range(2):
    b = _take(data.train_dataset(info, d, global_batch_size=200, seed=0, process_index=i,
                                 process_count=2), 1)[0]  # one epoch of this host's 100
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


@pytest.fixture(scope='session')
def imagenet(tmp_path_factory):
  src = _require('imagenet_sample')
  root = tmp_path_factory.mktemp('imnet')
  meta = make_imagenet_subset(src, root / 'flat')
  prepare.prepare_imagenet_folder(str(root / 'flat'), str(root / 'tfds'), eval_fraction=0.2)
  return root, meta


def test_imagenet_grayscale_decodes_to_rgb(imagenet):
  root, meta = imagenet
  for fname in meta['gray']:
    encoded = (root / 'flat' / fname).read_bytes()
    img = transforms.imagenet_eval(encoded, 64)
    assert img.shape == (64, 64, 3) and img.dtype == np.uint8
    np.testing.assert_array_equal(img[..., 0], img[..., 2])
    crop = transforms.imagenet_train(encoded, np.random.default_rng(1), 40)
    assert crop.shape == (40, 40, 3)


def test_imagenet_train_and_eval_batches(imagenet):
  root, _ = imagenet
  d = str(root / 'tfds')
  wnids = prepare.writer.imagenet_wnids()
  all_labels = {wnids.index(n.split('_')[0]) for n in os.listdir(root / 'flat')}
  info = data.get_dataset_info('imagenet2012', d)
  assert (info.num_classes, info.num_train, info.num_eval, info.image_size) == (1000, 11, 2, 224)
  b = _take(data.train_dataset(info, d, global_batch_size=8, seed=0, image_size=64,
                               process_index=0, process_count=1), 1)[0]
  assert b['image'].shape == (8, 64, 64, 3) and b['image'].dtype == np.uint8
  assert set(b['label'].tolist()) <= all_labels
  assert b['image'].std() > 10  # real content, not padding
  ev = list(data.eval_batches(info, d, global_batch_size=3, image_size=72, process_index=0,
                              process_count=1))
  assert [e['image'].shape for e in ev] == [(3, 72, 72, 3)]
  assert sum(int(e['mask'].sum()) for e in ev) == 2
  got = sorted(int(l) for e in ev for l, m in zip(e['label'], e['mask']) if m)
  val = tfds.data_source('imagenet2012', split='validation', data_dir=d)
  assert got == sorted(int(val[i]['label']) for i in range(len(val)))


def test_imagenet_worker_processes_match_threads_across_a_mid_stream_resume(imagenet):
  root, _ = imagenet
  d = str(root / 'tfds')
  info = data.get_dataset_info('imagenet2012', d)
  kwargs = dict(global_batch_size=4, seed=2, image_size=24, process_index=0, process_count=1)
  threads = _take(data.train_dataset(info, d, **kwargs), 14)
  it = iter(data.train_dataset(info, d, num_workers=2, **kwargs))
  for _ in range(2):
    next(it)
  state = it.get_state()
  for _ in range(4):  # Batches in flight (in the workers' rings and grain's queues) are dropped.
    next(it)
  it.set_state(state)
  for want in threads[2:]:  # More batches than the workers' rings have slots.
    got = next(it)
    np.testing.assert_array_equal(got['image'], want['image'])
    np.testing.assert_array_equal(got['label'], want['label'])
  eval_kwargs = dict(global_batch_size=2, image_size=32, process_index=0, process_count=1)
  for a, b in zip(data.eval_batches(info, d, **eval_kwargs),
                  data.eval_batches(info, d, num_workers=2, **eval_kwargs), strict=True):
    np.testing.assert_array_equal(a['image'], b['image'])
    np.testing.assert_array_equal(a['mask'], b['mask'])


def test_imagenet_decoders_yield_the_same_crops_in_the_pipeline(imagenet):
  root, _ = imagenet
  d = str(root / 'tfds')
  info = data.get_dataset_info('imagenet2012', d)
  kwargs = dict(global_batch_size=4, seed=1, image_size=48, process_index=0, process_count=1)
  pillow = _take(data.train_dataset(info, d, decoder=transforms.PILLOW, **kwargs), 2)
  default = _take(data.train_dataset(info, d, **kwargs), 2)
  for a, b in zip(pillow, default):
    np.testing.assert_array_equal(a['label'], b['label'])
    # The same boxes and flips: the decoders differ only by resampling (test_transforms.py).
    assert np.abs(a['image'].astype(np.float32) - b['image']).mean() < 6


def test_an_unreadable_training_image_is_one_error_naming_its_file():
  example = {'image': b'\xff\xd8 truncated', 'label': 3, 'file_name': b'n01440764_1.JPEG'}
  for decoder in (None, transforms.PILLOW):
    with pytest.raises(transforms.UnreadableImageError, match='n01440764_1.JPEG: not a readable'):
      pipeline.imagenet_train_batch([example], np.random.default_rng(0), image_size=32,
                                    decoder=decoder)
