"""Per-example preprocessing as TF ops (runs inside the tf.data graph).

All randomness is *stateless*: every function takes a `seed` int32/int64
tensor of shape [2], so the augmentation stream is a deterministic function of
the iterator seed.

* CIFAR train: zero-pad 4 + random 32x32 crop + random horizontal flip.
* CIFAR eval: none.
* ImageNet train: Inception-style random-resized crop (area 0.08-1, aspect
  3/4-4/3, 10 attempts, fallback to a center crop) + random flip.
* ImageNet eval: resize shorter side to image_size*256/224, center crop.
* Both: scale to [0,1], per-channel mean/std normalisation, cast to dtype.
JPEGs are decoded with `channels=3`, so grayscale (and CMYK) become RGB.
"""

from __future__ import annotations

import tensorflow as tf

CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

NORMALIZATION = {
    'cifar100': (CIFAR100_MEAN, CIFAR100_STD),
    'imagenet2012': (IMAGENET_MEAN, IMAGENET_STD),
}

_EVAL_RESIZE_RATIO = 256 / 224  # eval: shorter side -> image_size * 256/224.


def normalize(image: tf.Tensor, name: str, dtype=tf.float32) -> tf.Tensor:
  """uint8/float [0,255] image -> (x/255 - mean)/std in `dtype`."""
  mean, std = NORMALIZATION[name]
  image = tf.cast(image, tf.float32) / 255.0
  image = (image - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)
  return tf.cast(image, dtype)


def _split_seed(seed: tf.Tensor, num: int):
  return tf.unstack(tf.random.experimental.stateless_split(seed, num=num))


# ----------------------------------------------------------------- CIFAR.


def cifar_train(image: tf.Tensor, seed: tf.Tensor, image_size: int = 32) -> tf.Tensor:
  crop_seed, flip_seed = _split_seed(seed, 2)
  image = tf.pad(image, [[4, 4], [4, 4], [0, 0]])
  image = tf.image.stateless_random_crop(image, [32, 32, 3], seed=crop_seed)
  image = tf.image.stateless_random_flip_left_right(image, seed=flip_seed)
  return _maybe_resize(image, image_size)


def cifar_eval(image: tf.Tensor, image_size: int = 32) -> tf.Tensor:
  return _maybe_resize(image, image_size)


def _maybe_resize(image: tf.Tensor, image_size: int) -> tf.Tensor:
  if image_size == 32:
    return image
  return tf.image.resize(image, [image_size, image_size], method='bilinear')


# -------------------------------------------------------------- ImageNet.


def _center_crop_window(shape: tf.Tensor, image_size: int) -> tf.Tensor:
  """[y, x, h, w] of the central crop used when the random crop fails."""
  h, w = shape[0], shape[1]
  ratio = 1.0 / _EVAL_RESIZE_RATIO
  side = tf.cast(ratio * tf.cast(tf.minimum(h, w), tf.float32), tf.int32)
  side = tf.maximum(side, 1)
  return tf.stack([(h - side + 1) // 2, (w - side + 1) // 2, side, side])


def imagenet_train(encoded: tf.Tensor, seed: tf.Tensor, image_size: int = 224,
                   *, area_range=(0.08, 1.0), aspect_ratio_range=(3 / 4, 4 / 3),
                   max_attempts: int = 10) -> tf.Tensor:
  """Random-resized crop of an encoded JPEG -> uint8-range float [S,S,3]."""
  box_seed, flip_seed = _split_seed(seed, 2)
  shape = tf.image.extract_jpeg_shape(encoded)
  begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
      shape,
      bounding_boxes=tf.constant([0.0, 0.0, 1.0, 1.0], tf.float32, [1, 1, 4]),
      seed=box_seed,
      min_object_covered=0.1,
      aspect_ratio_range=aspect_ratio_range,
      area_range=area_range,
      max_attempts=max_attempts,
      use_image_if_no_bounding_boxes=True)
  window = tf.stack([begin[0], begin[1], size[0], size[1]])
  # If no attempt succeeded, the op returns the whole image: use center crop.
  failed = tf.reduce_all(tf.equal(shape[:2], size[:2]))
  window = tf.cond(failed, lambda: _center_crop_window(shape, image_size),
                   lambda: window)
  image = tf.image.decode_and_crop_jpeg(encoded, window, channels=3)
  image = tf.image.resize(image, [image_size, image_size], method='bilinear')
  image = tf.image.stateless_random_flip_left_right(image, seed=flip_seed)
  return image


def imagenet_eval(encoded: tf.Tensor, image_size: int = 224) -> tf.Tensor:
  """Resize shorter side to size*256/224 then center crop size x size."""
  image = tf.io.decode_jpeg(encoded, channels=3)
  shape = tf.shape(image)
  h = tf.cast(shape[0], tf.float32)
  w = tf.cast(shape[1], tf.float32)
  target = float(round(image_size * _EVAL_RESIZE_RATIO))
  scale = target / tf.minimum(h, w)
  new_h = tf.maximum(tf.cast(tf.round(h * scale), tf.int32), image_size)
  new_w = tf.maximum(tf.cast(tf.round(w * scale), tf.int32), image_size)
  image = tf.image.resize(image, [new_h, new_w], method='bilinear',
                          antialias=True)
  top = (new_h - image_size) // 2
  left = (new_w - image_size) // 2
  return tf.image.crop_to_bounding_box(image, top, left, image_size, image_size)
