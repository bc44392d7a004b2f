"""Pixel transforms shared by every source: class filter, crop+resize, bits.

Each transform exists once, in TensorFlow, so in-memory sources (numpy,
applied eagerly in chunks) and streaming TFDS sources (applied inside a
`tf.data` map) give identical pixels.
"""

import numpy as np
import tensorflow as tf

from tfp_flowpp.data.errors import DataError

__all__ = [
    'center_crop_resize',
    'center_crop_resize_np',
    'check_classes_present',
    'check_num_bits',
    'filter_classes',
    'model_class_labels',
    'perturb_pixels',
    'reduce_bits',
]

_CHUNK = 1024


def center_crop_resize(images, size, num_levels):
  """Center-crops to a square, resizes to ``size``², rounds to the levels.

  Downscaling uses area averaging, upscaling bilinear interpolation; the
  result is rounded and clipped back to the integers ``[0, num_levels)``.

  Args:
    images: uint8 Tensor ``[H, W, C]`` or ``[B, H, W, C]``.
    size: Output side length (python int).
    num_levels: Number of pixel levels of the input.

  Returns:
    uint8 Tensor ``[..., size, size, C]``.
  """
  images = tf.convert_to_tensor(images)
  shape = tf.shape(images)
  h, w = shape[-3], shape[-2]
  side = tf.minimum(h, w)
  top = (h - side) // 2
  left = (w - side) // 2
  x = tf.cast(images[..., top:top + side, left:left + side, :], tf.float32)
  x = tf.cond(
      side > size,
      lambda: tf.image.resize(x, [size, size], method='area'),
      lambda: tf.image.resize(x, [size, size], method='bilinear'))
  x = tf.clip_by_value(tf.round(x), 0., float(num_levels - 1))
  x = tf.cast(x, tf.uint8)
  static = images.shape[:-3].concatenate([size, size, images.shape[-1]])
  return tf.ensure_shape(x, static)


def center_crop_resize_np(images, size, num_levels):
  """`center_crop_resize` of a numpy ``[N, H, W, C]`` batch, in chunks."""
  out = [center_crop_resize(images[i:i + _CHUNK], size, num_levels).numpy()
         for i in range(0, len(images), _CHUNK)]
  if not out:
    return np.zeros((0, size, size, images.shape[-1]), np.uint8)
  return np.concatenate(out)


def check_num_bits(num_bits, num_levels, name):
  """Returns the level count after reducing to ``num_bits`` (None: keep).

  Raises:
    DataError: the data is not 8-bit, so shifting bits is meaningless.
  """
  if num_bits is None:
    return num_levels
  if num_levels != 256:
    raise DataError(f'num_bits={num_bits} needs 8-bit data (256 levels) but '
                    f'{name!r} has {num_levels} levels; leave num_bits unset '
                    f'for this data set.')
  return 2**num_bits


def reduce_bits(images, num_bits):
  """Keeps the top ``num_bits`` bits of 8-bit images (numpy or Tensor)."""
  if num_bits is None or num_bits == 8:
    return images
  if isinstance(images, np.ndarray):
    return images >> np.uint8(8 - num_bits)
  return images // tf.constant(2**(8 - num_bits), images.dtype)


def filter_classes(images, labels, classes, name, class_names=None,
                   check_present=True):
  """Keeps the images whose label is in ``classes`` (all when empty).

  Args:
    images: ``[N, ...]`` array.
    labels: int ``[N]`` array or None.
    classes: Tuple of labels to keep; empty keeps everything.
    name: Data set name, for error messages.
    class_names: Optional names indexed by label, for error messages.
    check_present: Whether every class must occur in ``labels``.

  Returns:
    ``(images, labels)`` restricted to ``classes``.

  Raises:
    DataError: the source has no labels, or a class does not occur.
  """
  if not classes:
    return images, labels
  if labels is None:
    raise DataError(f'classes={list(classes)} was given but {name!r} has no '
                    f'labels; leave classes empty.')
  check_classes_present(classes, np.unique(labels), name, class_names,
                        check_present)
  keep = np.isin(labels, np.asarray(classes))
  return images[keep], labels[keep]


def check_classes_present(classes, present, name, class_names=None,
                          check=True):
  """Raises `DataError` if a requested class is not among ``present``."""
  missing = [c for c in classes if c not in set(present.tolist())]
  if not check or not missing:
    return
  if len(present) > 20:
    known = f'{present.min()}..{present.max()}'
  else:
    known = ', '.join(
        f'{c} ({class_names[c]})' if class_names and c < len(class_names)
        else str(c) for c in present)
  raise DataError(f'classes {missing} do not occur in {name!r}; its labels '
                  f'are {known}.')


def model_class_labels(classes, labels, class_names):
  """The data set label of each class index 0..K-1 of a conditional model.

  With ``classes`` (e.g. ``--classes=5,3``) the model classes are the kept
  labels in increasing order (3 -> 0, 5 -> 1); otherwise every label is its
  own index (0..K-1, K = number of class names, else the largest label + 1).

  Args:
    classes: The `DataConfig` ``classes`` (empty: all).
    labels: int ``[N]`` training labels, or None for unlabelled data.
    class_names: Names indexed by label, or None.

  Returns:
    Tuple of ints, or None when the data has no labels.
  """
  if labels is None:
    return None
  if classes:
    return tuple(sorted(int(c) for c in classes))
  if class_names:
    return tuple(range(len(class_names)))
  labels = np.asarray(labels)
  return tuple(range(int(labels.max()) + 1 if labels.size else 0))


def perturb_pixels(images, rate, num_levels, seed):
  """Replaces each pixel with a uniform random level with probability ``rate``.

  The input perturbation of Ren et al.'s background models for
  likelihood-ratio out-of-distribution scores (NeurIPS 2019,
  https://arxiv.org/abs/1906.02845): independently for every pixel value,
  with probability ``rate`` it is replaced by a level drawn uniformly from
  ``[0, num_levels)``. Stateless: the same ``seed`` gives the same result.

  Args:
    images: integer Tensor (or array) ``[..., H, W, C]``.
    rate: Python float in [0, 1]; 0 returns ``images`` unchanged.
    num_levels: Pixel levels L.
    seed: stateless seed, int Tensor ``[2]``.

  Returns:
    Tensor of the dtype of ``images``.
  """
  images = tf.convert_to_tensor(images)
  if not 0. <= rate <= 1.:
    raise DataError(f'perturbation rate must be in [0, 1], got {rate}.')
  if rate == 0.:
    return images
  seeds = tf.random.experimental.stateless_split(seed, 2)
  replace = tf.random.stateless_uniform(tf.shape(images), seed=seeds[0]) < rate
  noise = tf.random.stateless_uniform(
      tf.shape(images), seed=seeds[1], minval=0, maxval=int(num_levels),
      dtype=tf.int32)
  return tf.where(replace, tf.cast(noise, images.dtype), images)
