"""Tests for dqnn.data.transforms: one crop formula for host and device, input standardisation, and the
two JPEG decoders against a full-decode-then-crop reference."""
import io

import jax.numpy as jnp
import numpy as np
from PIL import Image
import pytest

from dqnn.data import transforms
from tests.conftest import SHARED_DATA

DECODERS = [transforms.PILLOW,
            pytest.param(transforms.LIBJPEG_TURBO, marks=pytest.mark.skipif(
                transforms.default_decoder() != transforms.LIBJPEG_TURBO,
                reason='simplejpeg or OpenCV is not installed'))]


def _reference_crop_and_flip(image, dy, dx, flip):
  padded = np.pad(image, ((4, 4), (4, 4), (0, 0)))
  crop = padded[dy:dy + image.shape[0], dx:dx + image.shape[1]]
  return crop[:, ::-1] if flip else crop


def test_crop_and_flip_matches_the_per_image_definition_in_numpy_and_jax():
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
  dy, dx = rng.integers(0, 9, 6), rng.integers(0, 9, 6)
  flip = np.array([True, False, True, True, False, False])
  want = np.stack([_reference_crop_and_flip(*args) for args in zip(images, dy, dx, flip)])
  np.testing.assert_array_equal(transforms.crop_and_flip(images, dy, dx, flip), want)
  got = transforms.crop_and_flip(jnp.asarray(images), jnp.asarray(dy), jnp.asarray(dx),
                                 jnp.asarray(flip), xp=jnp)
  np.testing.assert_array_equal(np.asarray(got), want)


def _drawn_crop_and_flip(image, augmented):
  """The `(dy, dx, flip)` whose pad-crop-flip of `image` is exactly `augmented`, else None."""
  for dy in range(2 * transforms.CIFAR_PAD + 1):
    for dx in range(2 * transforms.CIFAR_PAD + 1):
      for flip in (False, True):
        if np.array_equal(_reference_crop_and_flip(image, dy, dx, flip), augmented):
          return dy, dx, flip
  return None


def test_cifar_train_batch_pad_crops_and_mirrors_each_image_at_random_deterministically():
  images = np.random.default_rng(1).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
  a = transforms.cifar_train_batch(images, np.random.default_rng(5))
  b = transforms.cifar_train_batch(images, np.random.default_rng(5))
  np.testing.assert_array_equal(a, b)
  assert a.dtype == np.uint8 and a.shape == images.shape
  draws = []
  for seed in range(3):
    batch = transforms.cifar_train_batch(images, np.random.default_rng(seed))
    draw = [_drawn_crop_and_flip(image, out) for image, out in zip(images, batch)]
    assert None not in draw, 'an output is not an exact pad-crop (and mirror) of its input'
    draws += draw
  # Over 24 draws: both mirrored and unmirrored images, and more than one crop window.
  assert {flip for _, _, flip in draws} == {False, True}
  assert len({(dy, dx) for dy, dx, _ in draws}) > 1
  assert not np.array_equal(transforms.cifar_train_batch(images, np.random.default_rng(0)),
                            transforms.cifar_train_batch(images, np.random.default_rng(1)))


def test_standardize_uses_the_dataset_statistics():
  images = np.full((1, 2, 2, 3), 255, np.uint8)
  mean, std = transforms.INPUT_STATISTICS['cifar100']
  np.testing.assert_allclose(np.asarray(transforms.standardize(images, 'cifar100'))[0, 0, 0],
                             (1 - np.array(mean)) / np.array(std), rtol=1e-6)


def test_imagenet_crops_decode_at_reduced_scale_and_match_full_decode_closely():
  rng = np.random.default_rng(0)
  base = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
  big = np.asarray(Image.fromarray(base).resize((800, 600), Image.BICUBIC))
  buf = io.BytesIO()
  Image.fromarray(big).save(buf, format='JPEG', quality=95)
  encoded = buf.getvalue()
  fast = transforms.imagenet_eval(encoded, 64).astype(np.float32)
  full = Image.open(io.BytesIO(encoded)).convert('RGB')
  side = int(600 * 224 / 256)
  box = ((800 - side) // 2, (600 - side) // 2, (800 - side) // 2 + side, (600 - side) // 2 + side)
  reference = np.asarray(full.resize((64, 64), Image.BILINEAR, box=box)).astype(np.float32)
  assert fast.shape == (64, 64, 3)
  assert np.abs(fast - reference).mean() < 6  # JPEG DCT scaling vs full decode: close, not equal


def _sample_jpegs(count: int) -> list[bytes]:
  """The first `count` sample JPEGs and every grayscale one."""
  folder = SHARED_DATA / 'imagenet_sample'
  if not folder.exists():
    pytest.skip(f'{folder} is absent (set DQNN_SHARED_DATA to the shared/data folder)')
  files = sorted(folder.iterdir())
  gray = [p for p in files if Image.open(p).mode == 'L']
  return [p.read_bytes() for p in files[:count] + gray]


def _jpeg(image: np.ndarray, mode: str = 'RGB', progressive: bool = False) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(image).convert(mode).save(buf, format='JPEG', quality=95,
                                            progressive=progressive)
  return buf.getvalue()


def _reference(encoded: bytes, box_fn, image_size: int, flip: bool) -> np.ndarray:
  """Full decode, then the crop box resized with Pillow's bilinear filter."""
  full = Image.open(io.BytesIO(encoded)).convert('RGB')
  left, top, w, h = box_fn(*full.size)
  image = np.asarray(full.resize((image_size, image_size), Image.BILINEAR,
                                 box=(left, top, left + w, top + h)))
  return image[:, ::-1] if flip else image


@pytest.mark.parametrize('decoder', DECODERS)
def test_imagenet_crops_match_full_decode_then_crop_on_the_sample(decoder):
  # Mean absolute difference per image in grey levels (of 255), measured on all 220 sample JPEGs:
  # Pillow: train 0.05 mean, 2.9 worst; eval 0.09 mean, 3.5 worst (few crops need its
  # reduced-scale decode); libjpeg-turbo: train 2.2 mean, 9.1 worst; eval 2.5 mean, 10.4 worst
  # (its DCT scaling, and a bilinear shrink of up to 2x without antialiasing).
  bound = {transforms.PILLOW: (0.5, 6), transforms.LIBJPEG_TURBO: (4, 30)}[decoder]
  train, evals = [], []
  for seed, encoded in enumerate(_sample_jpegs(20)):
    rng = np.random.default_rng(seed)
    got = transforms.imagenet_train(encoded, rng, 224, decoder)
    replay = np.random.default_rng(seed)
    box_fn = lambda w, h, replay=replay: transforms._random_resized_box(w, h, replay)
    want = _reference(encoded, box_fn, 224, flip=False)
    flipped = replay.random() < 0.5
    assert rng.random() == replay.random()  # Both drew the box, then the flip, and no more.
    train.append(np.abs(got.astype(np.float32) - (want[:, ::-1] if flipped else want)).mean())
    got = transforms.imagenet_eval(encoded, 224, decoder)
    want = _reference(encoded, transforms._center_box, 224, flip=False)
    evals.append(np.abs(got.astype(np.float32) - want).mean())
    assert got.shape == (224, 224, 3) and got.dtype == np.uint8
  for differences in (train, evals):
    assert np.mean(differences) < bound[0] and np.max(differences) < bound[1], differences


@pytest.mark.parametrize('decoder', DECODERS)
def test_imagenet_decoders_read_grayscale_cmyk_progressive_and_scaled_jpegs(decoder):
  rng = np.random.default_rng(0)
  base = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
  big = np.asarray(Image.fromarray(base).resize((800, 600), Image.BICUBIC))
  for mode, progressive in (('RGB', False), ('L', False), ('CMYK', False), ('RGB', True)):
    encoded = _jpeg(big, mode, progressive)  # CMYK: the fast path hands it to Pillow.
    got = transforms.imagenet_eval(encoded, 64, decoder)  # 1/8 scale: 525 px crop -> 64.
    want = _reference(encoded, transforms._center_box, 64, flip=False)
    assert got.shape == (64, 64, 3) and got.dtype == np.uint8
    assert np.abs(got.astype(np.float32) - want).mean() < 6, mode
    if mode == 'L':
      np.testing.assert_array_equal(got[..., 0], got[..., 2])
  png = io.BytesIO()
  Image.fromarray(base).save(png, format='PNG')
  assert transforms.imagenet_train(png.getvalue(), rng, 32, decoder).shape == (32, 32, 3)


def test_libjpeg_turbo_decodes_at_the_coarsest_power_of_two_scale_the_crop_allows():
  # Its other N/8 scales have no SIMD inverse DCT and cost more than a full decode.
  assert [transforms.dct_reduction(side, 224) for side in (100, 447, 448, 895, 896, 1792, 9000)
          ] == [1, 1, 2, 2, 4, 8, 8]
  encoded = _jpeg(np.zeros((600, 800, 3), np.uint8))
  if transforms.default_decoder() == transforms.LIBJPEG_TURBO:
    for reduction, shape in ((1, (600, 800, 3)), (2, (300, 400, 3)), (8, (75, 100, 3))):
      assert transforms.turbo_decode(encoded, 600, 800, reduction).shape == shape


@pytest.mark.parametrize('decoder', DECODERS)
def test_imagenet_crops_write_into_a_given_batch_row(decoder):
  rng = np.random.default_rng(3)
  image = np.asarray(Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)).resize(
      (300, 200), Image.BICUBIC))
  batch = np.zeros((3, 48, 48, 3), np.uint8)
  for row, mode in enumerate(('RGB', 'CMYK')):  # CMYK: the fast path's Pillow fallback.
    encoded = _jpeg(image, mode)
    want = transforms.imagenet_train(encoded, np.random.default_rng(row), 48, decoder)
    got = transforms.imagenet_train(encoded, np.random.default_rng(row), 48, decoder,
                                    out=batch[row])
    assert np.shares_memory(got, batch)
    np.testing.assert_array_equal(batch[row], want)
    assert transforms.imagenet_eval(encoded, 48, decoder, out=batch[2]) is not None
    np.testing.assert_array_equal(batch[2], transforms.imagenet_eval(encoded, 48, decoder))


@pytest.mark.parametrize('decoder', DECODERS)
def test_an_unreadable_image_is_one_error(decoder):
  truncated = _jpeg(np.zeros((64, 64, 3), np.uint8))[:200]
  for encoded in (truncated, b'not an image'):
    with pytest.raises(transforms.UnreadableImageError, match='not a readable'):
      transforms.imagenet_train(encoded, np.random.default_rng(0), 32, decoder)


def test_without_the_fast_libraries_pillow_decodes_and_asking_for_them_names_the_install(
    monkeypatch):
  monkeypatch.setattr(transforms, '_fast_codecs', lambda: None)
  assert transforms.default_decoder() == transforms.PILLOW
  encoded = _jpeg(np.full((50, 60, 3), 90, np.uint8))
  assert transforms.imagenet_train(encoded, np.random.default_rng(0), 32).shape == (32, 32, 3)
  with pytest.raises(ValueError, match='pip install simplejpeg opencv-python-headless'):
    transforms.imagenet_eval(encoded, 32, transforms.LIBJPEG_TURBO)
  with pytest.raises(ValueError, match='choose one of'):
    transforms.imagenet_eval(encoded, 32, 'nvjpeg')
