"""Tests for dqnn.data.transforms: one crop formula for host and device, normalisation."""
import jax.numpy as jnp
import numpy as np

from dqnn.data import transforms


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


def test_cifar_train_batch_is_deterministic_in_the_generator():
  images = np.random.default_rng(1).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
  a = transforms.cifar_train_batch(images, np.random.default_rng(5))
  b = transforms.cifar_train_batch(images, np.random.default_rng(5))
  np.testing.assert_array_equal(a, b)
  assert a.dtype == np.uint8 and a.shape == images.shape


def test_normalize_uses_the_dataset_statistics():
  images = np.full((1, 2, 2, 3), 255, np.uint8)
  mean, std = transforms.NORMALIZATION['cifar100']
  np.testing.assert_allclose(np.asarray(transforms.normalize(images, 'cifar100'))[0, 0, 0],
                             (1 - np.array(mean)) / np.array(std), rtol=1e-6)


def test_imagenet_crops_decode_at_reduced_scale_and_match_full_decode_closely():
  from PIL import Image
  import io
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
