"""Tests for the offline prepare tool (dqnn.data.prepare / writer)."""

import collections
import io
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow_datasets as tfds

from dqnn.data import prepare
from dqnn.data import specs
from dqnn.data import writer

tfds.disable_progress_bar()

REPO = pathlib.Path(__file__).resolve().parents[2]


def _shared_data() -> pathlib.Path:
  return pathlib.Path(os.environ.get('DQNN_SHARED_DATA') or REPO.parent / 'shared' / 'data')


def _require(rel: str) -> pathlib.Path:
  p = _shared_data() / rel
  if not p.exists():
    pytest.skip(f'shared data {p} is absent (set DQNN_SHARED_DATA to the shared/data folder)')
  return p


def _read_split(name, data_dir, split):
  source = tfds.data_source(name, split=split, data_dir=str(data_dir),
                            decoders={'image': tfds.decode.SkipDecoding()})
  return [source[i] for i in range(len(source))]


# ------------------------------------------------------------------ CIFAR.


@pytest.fixture(scope='session')
def npz_labels():
  with np.load(_require('cifar100/train.npz')) as f:
    return f['label'].astype(np.int64)


def test_carve_npz_is_first_k_per_class_in_file_order(npz_labels):
  train, test = prepare.carve_npz_splits(npz_labels, holdout_per_class=2,
                                         limit_per_class=5)
  assert len(test) == 200 and len(train) == 300
  assert not set(train) & set(test)
  for c in (0, 57, 99):
    first = np.flatnonzero(npz_labels == c)[:5]
    assert set(test[npz_labels[test] == c]) == set(first[:2])
    assert set(train[npz_labels[train] == c]) == set(first[2:])


def test_cli_npz_prepares_tfds_cifar100_and_refuses_overwrite(tmp_path, npz_labels):
  npz = _require('cifar100/train.npz')
  cmd = [sys.executable, '-m', 'dqnn.data.prepare', '--source=npz', f'--input={npz}',
         f'--data_dir={tmp_path}', '--limit_per_class=3', '--holdout_per_class=1']
  r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
  assert r.returncode == 0, r.stderr[-2000:]
  assert 'NOT the official CIFAR-100 test set' in r.stdout
  assert 'Prepared cifar100: splits train=200, test=100 ->' in r.stdout
  assert str(tmp_path / 'cifar100' / '3.0.2') in r.stdout
  # Loaded by the *real* TFDS builder, with its features.
  b = tfds.builder('cifar100', data_dir=str(tmp_path))
  assert b.is_prepared()
  assert set(b.info.features) == {'id', 'image', 'label', 'coarse_label'}
  assert b.info.splits['train'].num_examples == 200
  test = _read_split('cifar100', tmp_path, 'test')
  ids = sorted(int(x['id'].decode().split('_')[1]) for x in test)
  expected = sorted(int(np.flatnonzero(npz_labels == c)[0]) for c in range(100))
  assert ids == expected
  for x in test:
    assert x['coarse_label'] == specs.CIFAR100_FINE_TO_COARSE[x['label']]
  # Second run refuses to overwrite.
  with pytest.raises(writer.DatasetExistsError, match='--overwrite'):
    prepare.prepare_cifar100_npz(str(npz), str(tmp_path), holdout_per_class=1,
                                 limit_per_class=2)
  res = prepare.prepare_cifar100_npz(str(npz), str(tmp_path), holdout_per_class=1,
                                     limit_per_class=2, overwrite=True)
  assert res['counts'] == {'train': 100, 'test': 100}
  assert tfds.builder('cifar100', data_dir=str(tmp_path)).info.splits['train'].num_examples == 100


def _cifar10_npz(path, labels):
  rng = np.random.default_rng(0)
  np.savez(path, image=rng.integers(0, 256, (len(labels), 32, 32, 3), dtype=np.uint8),
           label=np.asarray(labels))
  return str(path)


def test_npz_prepares_tfds_cifar10_with_its_builders_features(tmp_path):
  npz = _cifar10_npz(tmp_path / 'cifar10.npz', np.repeat(np.arange(10), 3))
  res = prepare.prepare_npz(npz, str(tmp_path), dataset='cifar10', holdout_per_class=1)
  assert res['name'] == 'cifar10' and res['counts'] == {'train': 20, 'test': 10}
  b = tfds.builder('cifar10', data_dir=str(tmp_path))
  assert b.is_prepared()
  assert set(b.info.features) == {'id', 'image', 'label'}
  assert sorted(x['label'] for x in _read_split('cifar10', tmp_path, 'test')) == list(range(10))


def test_npz_labels_outside_the_datasets_classes_are_refused(tmp_path):
  npz = _cifar10_npz(tmp_path / 'cifar10.npz', [0, 10])
  with pytest.raises(ValueError, match=r'labels \[2\] in \[0, 10\)'):
    prepare.prepare_npz(npz, str(tmp_path), dataset='cifar10')


def test_cli_source_that_cannot_build_the_dataset_is_one_error(tmp_path):
  r = subprocess.run([sys.executable, '-m', 'dqnn.data.prepare', '--source=image_folder',
                      '--dataset=cifar10', f'--input={tmp_path}', f'--data_dir={tmp_path}'],
                     cwd=REPO, capture_output=True, text=True, timeout=120)
  assert r.returncode == 1
  assert ("ERROR: --source=image_folder cannot build 'cifar10'; it builds imagenet2012 "
          '(--dataset).') in r.stderr


# --------------------------------------------------------------- ImageNet.


def _grayscale_files(folder, k):
  from PIL import Image
  out = []
  for p in sorted(folder.iterdir()):
    with Image.open(p) as im:
      if im.mode == 'L':
        out.append(p)
    if len(out) == k:
      break
  return out


def make_imagenet_subset(folder: pathlib.Path, dst: pathlib.Path) -> dict:
  """Symlinks 10 RGB + 3 grayscale samples, adds a CMYK JPEG and a PNG."""
  from PIL import Image
  dst.mkdir(parents=True)
  files = sorted(folder.iterdir())[:10] + _grayscale_files(folder, 3)
  for p in files:
    (dst / p.name).symlink_to(p)
  with Image.open(files[0]) as im:
    im.convert('CMYK').save(dst / 'n15075141_cmyk.JPEG', format='JPEG')
    im.convert('RGB').save(dst / 'n04592741_png.png', format='PNG')
  return {'n': len(files) + 2, 'gray': [p.name for p in files[10:]]}


@pytest.fixture(scope='session')
def imagenet_prepared(tmp_path_factory):
  src = _require('imagenet_sample')
  root = tmp_path_factory.mktemp('imnet')
  meta = make_imagenet_subset(src, root / 'flat')
  res = prepare.prepare_imagenet_folder(str(root / 'flat'), str(root / 'tfds'))
  return root, meta, res


def test_imagenet_prepare_labels_splits_and_bytes(imagenet_prepared):
  root, meta, res = imagenet_prepared
  wnids = writer.imagenet_wnids()
  assert wnids[0] == 'n01440764' and wnids[-1] == 'n15075141' and len(wnids) == 1000
  # 15 files, every 5th (positions 4, 9, 14) -> validation.
  assert res['counts'] == {'train': 12, 'validation': 3}
  assert res['path'] == str(root / 'tfds' / 'imagenet2012' / '5.1.0')
  b = tfds.builder('imagenet2012', data_dir=str(root / 'tfds'))
  assert set(b.info.features) == {'image', 'label', 'file_name'}
  seen = []
  for split in ('train', 'validation'):
    for x in _read_split('imagenet2012', root / 'tfds', split):
      fname = x['file_name'].decode()
      seen.append(fname)
      assert x['label'] == wnids.index(fname.split('_')[0])
      assert x['image'][:2] == b'\xff\xd8'  # JPEG
      if fname.endswith('.JPEG') and 'cmyk' not in fname:  # stored as-is
        assert x['image'] == (root / 'flat' / fname).read_bytes()
  assert len(seen) == len(set(seen)) == meta['n']
  assert set(meta['gray']) <= set(seen)


def test_imagenet_class_subfolders_and_holdout(tmp_path):
  src = _require('imagenet_sample')
  files = sorted(src.iterdir())[:3]
  for p in files:
    d = tmp_path / 'in' / p.name.split('_')[0]
    d.mkdir(parents=True)
    (d / 'a.JPEG').symlink_to(p)
    (d / 'b.JPEG').symlink_to(p)
  res = prepare.prepare_imagenet_folder(str(tmp_path / 'in'), str(tmp_path / 'out'),
                                        holdout_per_class=1)
  assert res['counts'] == {'train': 3, 'validation': 3}
  val = _read_split('imagenet2012', tmp_path / 'out', 'validation')
  assert collections.Counter(int(x['label']) for x in val) == collections.Counter(
      writer.imagenet_wnids().index(p.name.split('_')[0]) for p in files)
  assert {x['file_name'] for x in val} == {b'a.JPEG'}


def test_imagenet_rejects_non_wnid_names(tmp_path):
  from PIL import Image
  (tmp_path / 'in').mkdir()
  Image.new('RGB', (8, 8)).save(tmp_path / 'in' / 'cat_1.jpg')
  with pytest.raises(ValueError, match='not an ILSVRC-2012 wnid'):
    prepare.prepare_imagenet_folder(str(tmp_path / 'in'), str(tmp_path / 'out'))


def test_jpeg_bytes_reencodes_cmyk_to_rgb(tmp_path):
  from PIL import Image
  p = tmp_path / 'x.jpg'
  Image.new('CMYK', (10, 6), (0, 255, 255, 0)).save(p, format='JPEG')
  data = prepare.jpeg_bytes(str(p))
  with Image.open(io.BytesIO(data)) as im:
    assert im.format == 'JPEG' and im.mode == 'RGB' and im.size == (10, 6)


def test_jpeg_bytes_resizes_to_max_short_side(tmp_path):
  from PIL import Image
  p = tmp_path / 'big.jpg'
  Image.new('RGB', (600, 400), (10, 200, 30)).save(p, format='JPEG')
  with Image.open(io.BytesIO(prepare.jpeg_bytes(str(p), max_short_side=256))) as im:
    assert im.size == (384, 256) and im.format == 'JPEG'
  small = tmp_path / 'small.jpg'
  Image.new('RGB', (100, 80)).save(small, format='JPEG')
  assert prepare.jpeg_bytes(str(small), max_short_side=256) == small.read_bytes()


def test_jpeg_bytes_reencodes_at_the_given_quality(tmp_path):
  from PIL import Image
  p = tmp_path / 'noisy.png'
  noise = np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8)
  Image.fromarray(noise).save(p)
  sizes = {q: len(prepare.jpeg_bytes(str(p), max_short_side=256, jpeg_quality=q))
           for q in (90, prepare.DEFAULT_JPEG_QUALITY)}
  assert prepare.jpeg_bytes(str(p), max_short_side=256) == prepare.jpeg_bytes(
      str(p), max_short_side=256, jpeg_quality=prepare.DEFAULT_JPEG_QUALITY)
  assert sizes[90] < 0.8 * sizes[prepare.DEFAULT_JPEG_QUALITY]


def test_cli_jpeg_quality_outside_1_to_100_is_one_error_before_any_work(tmp_path):
  r = subprocess.run([sys.executable, '-m', 'dqnn.data.prepare', '--source=image_folder',
                      f'--input={tmp_path / "absent"}', f'--data_dir={tmp_path / "out"}',
                      '--max_short_side=256', '--jpeg_quality=0'],
                     cwd=REPO, capture_output=True, text=True, timeout=120)
  assert r.returncode == 1
  assert 'ERROR: --jpeg_quality must be in 1..100 (got 0).' in r.stderr
  assert not (tmp_path / 'out').exists()


# ------------------------------------------------------------ bad input.


@pytest.mark.parametrize('damage', ['truncated', 'random_bytes'])
def test_unreadable_image_is_named_and_keeps_the_old_dataset(tmp_path, damage):
  from PIL import Image
  good = tmp_path / 'good'
  good.mkdir()
  for i, wnid in enumerate(('n01440764', 'n01443537')):
    Image.new('RGB', (40, 30), (i * 90, 20, 20)).save(good / f'{wnid}_{i}.JPEG')
    Image.new('RGB', (40, 30), (20, i * 90, 20)).save(good / f'{wnid}_{i + 5}.JPEG')
  out = tmp_path / 'tfds'
  prepare.prepare_imagenet_folder(str(good), str(out), holdout_per_class=1)
  before = sorted(p.name for p in (out / 'imagenet2012' / '5.1.0').iterdir())
  bad = tmp_path / 'bad'
  bad.mkdir()
  for p in good.iterdir():
    (bad / p.name).write_bytes(p.read_bytes())
  broken = bad / 'n01440764_9.JPEG'
  payload = (good / 'n01440764_0.JPEG').read_bytes()
  broken.write_bytes(payload[:len(payload) // 2] if damage == 'truncated'
                     else np.random.default_rng(0).bytes(500))
  with pytest.raises(ValueError, match=str(broken)):
    prepare.prepare_imagenet_folder(str(bad), str(out), holdout_per_class=1, overwrite=True)
  # The old dataset is intact and nothing half-written is left beside it.
  assert sorted(p.name for p in (out / 'imagenet2012' / '5.1.0').iterdir()) == before
  assert tfds.builder('imagenet2012', data_dir=str(out)).info.splits['train'].num_examples == 2
  assert sorted(p.name for p in out.iterdir()) == ['imagenet2012']


@pytest.mark.parametrize('arrays,message', [
    ({'image': np.zeros((0, 32, 32, 3), np.uint8), 'label': np.zeros(0, np.int64)},
     'holds no images'),
    ({'image': np.zeros((2, 32, 32, 3), np.uint8)}, r"missing array\(s\) \['label'\]"),
    ({'image': np.zeros((2, 32, 32, 3), np.uint8), 'label': np.array([1.7, 2.2])},
     'labels must be integers'),
    ({'image': np.zeros((2, 32, 32), np.uint8), 'label': np.array([1, 2])},
     r'expected uint8 images \[N,32,32,3\]'),
])
def test_bad_npz_gets_one_clear_error(tmp_path, arrays, message):
  path = tmp_path / 'x.npz'
  np.savez(path, **arrays)
  with pytest.raises(ValueError, match=message):
    prepare.prepare_cifar100_npz(str(path), str(tmp_path / 'out'))
  assert not (tmp_path / 'out' / 'cifar100').exists()


def test_not_an_npz_is_named(tmp_path):
  path = tmp_path / 'x.npz'
  path.write_bytes(b'not a zip file at all')
  with pytest.raises(ValueError, match='not a readable .npz'):
    prepare.prepare_cifar100_npz(str(path), str(tmp_path / 'out'))


def _tiny_image_folder(directory: pathlib.Path) -> pathlib.Path:
  from PIL import Image
  directory.mkdir()
  for i, wnid in enumerate(('n01440764', 'n01443537')):
    for j in range(2):
      Image.new('RGB', (40, 30), (i * 90, j * 90, 20)).save(directory / f'{wnid}_{j}.JPEG')
  return directory


def test_a_killed_prepares_staging_folder_is_removed_by_the_next_prepare(tmp_path):
  out = tmp_path / 'tfds'
  out.mkdir()
  finished = subprocess.run([sys.executable, '-c', 'import os; print(os.getpid())'],
                            capture_output=True, text=True, check=True)
  host = socket.gethostname()
  dead = out / f'.imagenet2012-prepare-{host}-{finished.stdout.strip()}-abc'
  running = out / f'.imagenet2012-prepare-{host}-{os.getppid()}-def'  # A live process's.
  for staging in (dead, running):
    (staging / 'imagenet2012').mkdir(parents=True)
  prepare.prepare_imagenet_folder(str(_tiny_image_folder(tmp_path / 'images')), str(out),
                                  holdout_per_class=1)
  assert sorted(p.name for p in out.iterdir()) == sorted(['imagenet2012', running.name])


def test_sigterm_during_prepare_removes_its_staging_folder(tmp_path):
  npz = _require('cifar100/train.npz')
  # prepare's own command line, each example slowed down so that the SIGTERM surely lands while
  # the dataset is being written (a real prepare of this size ends within a second or two, and
  # a signal that arrives as the interpreter exits is never handled).
  driver = (
      'import sys, time\n'
      'from absl import app\n'
      'from dqnn.data import prepare, writer\n'
      'example = writer.npz_example\n'
      'writer.npz_example = lambda *a, **k: (time.sleep(0.005), example(*a, **k))[1]\n'
      'prepare._define_flags()\n'
      'app.run(prepare.main, argv=sys.argv)\n')
  process = subprocess.Popen(
      [sys.executable, '-c', driver, '--source=npz', f'--input={npz}',
       f'--data_dir={tmp_path}', '--limit_per_class=100'], cwd=REPO,
      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.monotonic() + 120
  while not list(tmp_path.glob('.cifar100-prepare-*')) and time.monotonic() < deadline:
    time.sleep(0.05)
  assert process.poll() is None, 'prepare finished before it could be interrupted'
  process.send_signal(signal.SIGTERM)
  assert process.wait(timeout=60) == 128 + signal.SIGTERM
  assert list(tmp_path.iterdir()) == []
