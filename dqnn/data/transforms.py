"""Image preprocessing: augmentation on uint8 images, standardisation on the device.

Pipelines hand uint8 images to the train step (a quarter of float32's host-to-device bytes);
the step standardises them with `standardize`. Randomness comes from generators seeded by the
pipeline, so every batch is a deterministic function of (seed, position).

* CIFAR train: zero-pad 4 + random 32x32 crop + random horizontal flip, on whole batches
  (`crop_and_flip` is shared by the host pipeline, in numpy, and the on-device input, in jax).
* ImageNet train: Inception-style random-resized crop (area 0.08-1, aspect 3/4-4/3, 10 attempts,
  fallback to a center crop) + random flip; JPEGs are decoded at the coarsest of the 1/1, 1/2,
  1/4, 1/8 DCT scales that keeps the crop at least image_size on its shorter side.
* ImageNet eval: the central crop of side shorter-side x 224/256, resized to image_size.
Grayscale and CMYK images become RGB.

Two decoders give the same crops (the same sampler draws from the same generator):
* `LIBJPEG_TURBO` (the default when `simplejpeg` and OpenCV are installed): libjpeg-turbo scaled
  decode (fast integer DCT) and one bilinear warp that crops, resizes and flips at once, without
  antialiasing (after the scaled decode a crop under 16x image_size is shrunk by less than 2x).
* `PILLOW`: `Image.draft` (1/2, 1/4, 1/8 scales) and an antialiased bilinear resize. It reads what
  libjpeg-turbo's decoder does not (CMYK, PNG, other formats), so the fast path falls back to it
  image by image; it is also the whole path where the fast libraries are not installed.
The two differ by a few grey levels per pixel (JPEG DCT scaling and resampling;
tests/data/test_transforms.py bounds it).
"""

from __future__ import annotations

import functools
import io
import math

from absl import logging
import jax.numpy as jnp
import numpy as np

from dqnn.data import specs

# (mean, std) per dataset, from its record.
INPUT_STATISTICS = {name: (spec.mean, spec.std) for name, spec in specs.SPECS.items()}

PILLOW = 'pillow'
LIBJPEG_TURBO = 'libjpeg-turbo'
DECODERS = (PILLOW, LIBJPEG_TURBO)

CIFAR_PAD = 4
_EVAL_CROP_FRACTION = 224 / 256


def standardize(images, input_statistics: str) -> jnp.ndarray:
  """uint8 [..., 3] images -> (x/255 - mean)/std in float32 (jax, so it runs in the step), with
  the statistics of the dataset `input_statistics` names (`datasets.input_statistics`)."""
  mean, std = INPUT_STATISTICS[input_statistics]
  images = jnp.asarray(images, jnp.float32) / 255.0
  return (images - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)


# ----------------------------------------------------------------- CIFAR.


def crop_and_flip(images, offset_y, offset_x, flip, xp=np):
  """Crops of `images` zero-padded by CIFAR_PAD at the given offsets, mirrored where `flip`.

  images: uint8 [B, H, W, C]; offset_y/offset_x: int [B] in [0, 2*CIFAR_PAD]; flip: bool [B].
  `xp` is numpy (host pipeline) or jax.numpy (on-device input): one formula for both.
  """
  b, h, w, _ = images.shape
  padded = xp.pad(images, ((0, 0), (CIFAR_PAD, CIFAR_PAD), (CIFAR_PAD, CIFAR_PAD), (0, 0)))
  rows = offset_y[:, None] + xp.arange(h)[None, :]
  cols = xp.where(flip[:, None], w - 1 - xp.arange(w)[None, :], xp.arange(w)[None, :])
  cols = offset_x[:, None] + cols
  return padded[xp.arange(b)[:, None, None], rows[:, :, None], cols[:, None, :]]


def cifar_train_batch(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """Random pad-crop and flip of a uint8 batch [B, 32, 32, 3]."""
  b = len(images)
  offsets = rng.integers(0, 2 * CIFAR_PAD + 1, size=(2, b))
  return crop_and_flip(images, offsets[0], offsets[1], rng.random(b) < 0.5)


# -------------------------------------------------------------- ImageNet.


def _open_rgb_draft(encoded: bytes, scale: float):
  """The image decoded at the coarsest JPEG scale that keeps `scale` x its size."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  image = Image.open(io.BytesIO(encoded))
  full = image.size
  if scale < 1:
    image.draft('RGB', (math.ceil(full[0] * scale), math.ceil(full[1] * scale)))
  return image.convert('RGB'), full


def _random_resized_box(width: int, height: int, rng: np.random.Generator,
                        area_range=(0.08, 1.0), aspect_ratio_range=(3 / 4, 4 / 3),
                        max_attempts: int = 10) -> tuple[float, float, float, float]:
  """(left, top, crop width, crop height) of an Inception-style random crop."""
  area = width * height
  log_ratio = np.log(aspect_ratio_range)
  for _ in range(max_attempts):
    target_area = area * rng.uniform(*area_range)
    aspect = math.exp(rng.uniform(*log_ratio))
    w = round(math.sqrt(target_area * aspect))
    h = round(math.sqrt(target_area / aspect))
    if 0 < w <= width and 0 < h <= height:
      return rng.integers(0, width - w + 1), rng.integers(0, height - h + 1), w, h
  return _center_box(width, height)


def _center_box(width: int, height: int) -> tuple[float, float, float, float]:
  side = max(1, int(min(width, height) * _EVAL_CROP_FRACTION))
  return (width - side) // 2, (height - side) // 2, side, side


class UnreadableImageError(ValueError):
  """An encoded image that no decoder reads."""


@functools.cache
def _fast_codecs():
  """(simplejpeg, cv2), or None where either is not installed."""
  try:
    import cv2  # pylint: disable=g-import-not-at-top
    import simplejpeg  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    logging.warning('%s: ImageNet JPEGs decode with Pillow, at about half the images per '
                    'CPU-second (pip install simplejpeg opencv-python-headless).', e)
    return None
  cv2.setNumThreads(1)  # The pipeline's threads and processes are the parallelism.
  return simplejpeg, cv2


def default_decoder() -> str:
  """LIBJPEG_TURBO where its libraries are installed, else PILLOW."""
  return LIBJPEG_TURBO if _fast_codecs() else PILLOW


def _check_decoder(decoder: str | None) -> str:
  decoder = decoder or default_decoder()
  if decoder not in DECODERS:
    raise ValueError(f'Unknown JPEG decoder {decoder!r}; choose one of {DECODERS}.')
  if decoder == LIBJPEG_TURBO and not _fast_codecs():
    raise ValueError(f'The {LIBJPEG_TURBO} decoder needs simplejpeg and OpenCV: '
                     'pip install simplejpeg opencv-python-headless')
  return decoder


def _pillow_crop_resize(encoded: bytes, box_fn, image_size: int, flip,
                        out: np.ndarray | None = None) -> np.ndarray:
  """Pillow's reduced-scale decode and antialiased resize; `flip()` is drawn after the box."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  try:
    with Image.open(io.BytesIO(encoded)) as probe:
      width, height = probe.size
    left, top, w, h = box_fn(width, height)
    image, full = _open_rgb_draft(encoded, image_size / min(w, h))
    sx, sy = image.size[0] / full[0], image.size[1] / full[1]
    box = (left * sx, top * sy, (left + w) * sx, (top + h) * sy)
    image = np.asarray(image.resize((image_size, image_size), Image.BILINEAR, box=box))
  except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
    raise UnreadableImageError(f'not a readable image ({e})') from e
  image = image[:, ::-1] if flip() else image
  if out is None:
    return image
  out[...] = image
  return out


def dct_reduction(crop_side: int, image_size: int) -> int:
  """The coarsest of libjpeg-turbo's 1/1, 1/2, 1/4 and 1/8 DCT scales (as its reduction 1, 2, 4
  or 8) that keeps a crop's shorter side `crop_side` at least `image_size`.

  Only these scales: libjpeg-turbo has SIMD inverse DCTs for them alone, and its other N/8
  scales cost more than a full decode (7/8: 1.7x, 5/8: 1.2x; docs/results.md).
  """
  reduction = 1
  while reduction < 8 and crop_side >= 2 * reduction * image_size:
    reduction *= 2
  return reduction


def turbo_decode(encoded: bytes, height: int, width: int, reduction: int) -> np.ndarray:
  """A JPEG of that size decoded by libjpeg-turbo to RGB at DCT scale 1/`reduction`."""
  simplejpeg, _ = _fast_codecs()
  if reduction == 1:
    return simplejpeg.decode_jpeg(encoded, 'rgb', fastdct=True)
  # simplejpeg picks the smallest N/8 scale giving at least this size: exactly (8/reduction)/8.
  return simplejpeg.decode_jpeg(encoded, 'rgb', fastdct=True,
                                min_height=math.ceil(height / reduction),
                                min_width=math.ceil(width / reduction))


def _turbo_crop_resize(encoded: bytes, box_fn, image_size: int, flip,
                       out: np.ndarray | None = None) -> np.ndarray:
  """libjpeg-turbo's scaled decode, then one warp: crop + resize (+ mirror) in a single pass."""
  simplejpeg, cv2 = _fast_codecs()
  try:
    height, width, colorspace, _ = simplejpeg.decode_jpeg_header(encoded)
  except ValueError:  # Not a JPEG.
    colorspace = None
  if colorspace not in ('Gray', 'YCbCr', 'RGB'):  # CMYK/YCCK and other formats: Pillow.
    return _pillow_crop_resize(encoded, box_fn, image_size, flip, out)
  left, top, w, h = box_fn(width, height)
  try:
    image = turbo_decode(encoded, height, width, dct_reduction(min(w, h), image_size))
  except ValueError as e:
    raise UnreadableImageError(f'not a readable JPEG ({e})') from e
  sx, sy = image.shape[1] / width, image.shape[0] / height
  # Output pixel centre i + 0.5 samples the box at left + (i + 0.5) * step (Pillow's and
  # cv2.resize's convention); pixel centres of `image` are at integer coordinates.
  step_x, step_y = w * sx / image_size, h * sy / image_size
  y = (0.0, step_y, top * sy + 0.5 * step_y - 0.5)
  if flip():
    x = (-step_x, 0.0, left * sx + (image_size - 0.5) * step_x - 0.5)
  else:
    x = (step_x, 0.0, left * sx + 0.5 * step_x - 0.5)
  return cv2.warpAffine(image, np.array([x, y]), (image_size, image_size), dst=out,
                        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                        borderMode=cv2.BORDER_REPLICATE)


def imagenet_train(encoded: bytes, rng: np.random.Generator, image_size: int = 224,
                   decoder: str | None = None, out: np.ndarray | None = None) -> np.ndarray:
  """Random-resized crop + random flip of a JPEG -> uint8 [S, S, 3], written into `out` (a
  batch's row, so batching copies nothing) when given.

  The crop box, then the flip, are drawn from `rng` whichever `decoder` (`DECODERS`; default
  `default_decoder()`) runs, so both decoders crop the same region.
  """
  crop_resize = (_turbo_crop_resize if _check_decoder(decoder) == LIBJPEG_TURBO
                 else _pillow_crop_resize)
  return crop_resize(encoded, lambda w, h: _random_resized_box(w, h, rng), image_size,
                     lambda: rng.random() < 0.5, out)


def random_crop_window(width: int, height: int,
                       rng: np.random.Generator) -> tuple[int, int, int, int, bool]:
  """(left, top, crop width, crop height, flip): the draws `imagenet_train` makes from `rng` for
  an image of that size, in its order, for decoders outside this module (DALI)."""
  left, top, w, h = _random_resized_box(width, height, rng)
  return int(left), int(top), int(w), int(h), bool(rng.random() < 0.5)


def image_dimensions(encoded: bytes) -> tuple[int, int]:
  """(width, height) of an encoded image, read from its header."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  try:
    with Image.open(io.BytesIO(encoded)) as probe:
      return probe.size
  except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
    raise UnreadableImageError(f'not a readable image ({e})') from e


def imagenet_eval(encoded: bytes, image_size: int = 224, decoder: str | None = None,
                  out: np.ndarray | None = None) -> np.ndarray:
  """Central crop (shorter side x 224/256) of a JPEG resized to uint8 [S, S, 3], written into
  `out` when given."""
  crop_resize = (_turbo_crop_resize if _check_decoder(decoder) == LIBJPEG_TURBO
                 else _pillow_crop_resize)
  return crop_resize(encoded, _center_box, image_size, lambda: False, out)


def resize_square(image: np.ndarray, image_size: int) -> np.ndarray:
  """A small image (CIFAR) resized to image_size, for models that want another input size."""
  if image.shape[-2] == image_size:
    return image
  from PIL import Image  # pylint: disable=g-import-not-at-top
  return np.asarray(Image.fromarray(image).resize((image_size, image_size), Image.BILINEAR))
