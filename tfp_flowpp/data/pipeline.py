"""`ImageDataset`: split sizes, resumable training batches, eval batches.

A data set is a handful of named splits (``'train'``, ``'validation'``,
``'test'``). Each split is held by a backend: `ArraySplit` (numpy in memory,
used by every source small enough) or `streaming.StreamSplit` (big TFDS
data). Both give the same guarantees:

* Epoch ``e`` of training visits the examples in an order fixed by
  ``(seed, e)``; global batch ``k`` is batch ``k % steps_per_epoch`` of epoch
  ``k // steps_per_epoch``, so ``train_batches(b, start_step=k)`` resumes a
  killed run exactly.
* Horizontal flips (training only) come from a stateless RNG keyed by
  ``(seed, global step)``, so resumed runs flip the same images.
"""

import numbers

import numpy as np
import tensorflow as tf

from tfp_flowpp.data import splits as splits_lib
from tfp_flowpp.data.errors import DataError

__all__ = ['ArraySplit', 'ImageDataset', 'SPLITS', 'flip_batch']

SPLITS = ('train', 'validation', 'test')

# Folded into the flip RNG key so flips are independent of any other
# stateless randomness a trainer keys by (seed, step), e.g. dequantization.
_FLIP_TAG = 0x5F11


def flip_batch(step, batch, seed):
  """Flips each image of ``batch`` left-right with probability 1/2.

  Args:
    step: int64 scalar Tensor, the global training step of ``batch``.
    batch: ``[B, H, W, C]`` Tensor.
    seed: Python int, the config seed.

  Returns:
    The batch with a random subset of its images mirrored; the subset only
    depends on ``(seed, step)``.
  """
  key = tf.random.experimental.stateless_fold_in(
      tf.constant([seed, _FLIP_TAG], tf.int64), tf.cast(step, tf.int64))
  flip = tf.random.stateless_uniform([tf.shape(batch)[0]], seed=key) < 0.5
  return tf.where(flip[:, None, None, None], tf.reverse(batch, axis=[2]),
                  batch)


class ArraySplit:
  """One split held in memory as a uint8 ``[N, H, W, C]`` numpy array."""

  streaming = False

  def __init__(self, images, labels=None, paths=None):
    self._images = images
    self._labels = labels
    self._paths = paths

  @property
  def num_examples(self):
    return len(self._images)

  def images(self):
    return self._images

  def labels(self):
    return self._labels

  def paths(self):
    return self._paths

  def train_stream(self, batch_size, steps_per_epoch, start_step, seed):
    """Infinite ``(global_step, batch)`` dataset starting at ``start_step``.

    Resuming is O(1): only the permutation of the starting epoch is drawn
    and sliced; no earlier batch is produced.
    """
    images = self._images
    n = len(images)

    def generate():
      step = start_step
      while True:
        epoch, first = divmod(step, steps_per_epoch)
        perm = splits_lib.epoch_permutation(n, seed, epoch)
        for i in range(first, steps_per_epoch):
          yield step, images[perm[i * batch_size:(i + 1) * batch_size]]
          step += 1

    return tf.data.Dataset.from_generator(
        generate,
        output_signature=(
            tf.TensorSpec([], tf.int64),
            tf.TensorSpec((batch_size,) + images.shape[1:], tf.uint8)))

  def eval_stream(self, batch_size):
    """Finite dataset of the split's images in order, last batch partial."""
    images = self._images

    def generate():
      for i in range(0, len(images), batch_size):
        yield images[i:i + batch_size]

    return tf.data.Dataset.from_generator(
        generate,
        output_signature=tf.TensorSpec((None,) + images.shape[1:], tf.uint8))


class ImageDataset:
  """A loaded image data set: metadata plus train/eval batch pipelines.

  Build one with `tfp_flowpp.data.load_dataset` (or `from_arrays`). Pixel
  values are integers in ``[0, num_levels)`` stored as uint8.

  Attributes:
    name: Short data set name, e.g. ``'digits'``.
    image_shape: ``(H, W, C)`` python ints.
    num_levels: Number of pixel levels L.
    num_examples: Dict split name -> number of images.
    class_names: Names indexed by label, or None.
    config: The `DataConfig` it was loaded with (or None).
  """

  def __init__(self, *, name, image_shape, num_levels, splits, class_names,
               seed=0, horizontal_flip=False, config=None):
    missing = set(SPLITS) - set(splits)
    if missing:
      raise ValueError(f'splits is missing {sorted(missing)}')
    self.name = name
    self.image_shape = tuple(int(d) for d in image_shape)
    self.num_levels = int(num_levels)
    self.class_names = None if class_names is None else list(class_names)
    self.config = config
    self._splits = dict(splits)
    self._seed = int(seed)
    self._horizontal_flip = bool(horizontal_flip)
    self.num_examples = {s: int(self._splits[s].num_examples) for s in SPLITS}

  def __repr__(self):
    sizes = ', '.join(f'{s}={n}' for s, n in self.num_examples.items())
    return (f'ImageDataset({self.name!r}, image_shape={self.image_shape}, '
            f'num_levels={self.num_levels}, {sizes})')

  @property
  def streaming(self):
    """True when the training split streams from TFDS instead of memory."""
    return any(s.streaming for s in self._splits.values())

  def _split(self, split):
    if split not in self._splits:
      raise DataError(f'unknown split {split!r}; use one of '
                      f'{", ".join(SPLITS)}.')
    return self._splits[split]

  def arrays(self, split):
    """All images of ``split`` as a uint8 ``[N, H, W, C]`` numpy array.

    Raises:
      DataError: unknown split, or the data set streams from TFDS because it
        is too big for memory.
    """
    backend = self._split(split)
    if backend.streaming:
      raise DataError(f'{self.name!r} streams from TFDS (too big to hold in '
                      f'memory), so arrays({split!r}) is unavailable; use '
                      f'eval_batches({split!r}, batch_size) instead.')
    return backend.images()

  def labels(self, split):
    """Labels of ``split`` (int64 ``[N]``, aligned with `arrays`) or None."""
    backend = self._split(split)
    if backend.streaming:
      raise DataError(f'{self.name!r} streams from TFDS, so labels({split!r}) '
                      f'is unavailable.')
    return backend.labels()

  def paths(self, split):
    """Source file of each image of ``split`` (aligned with `arrays`).

    Returns:
      A string array ``[N]`` for sources read from image files
      (``folder:DIR``), None for every other source.
    """
    paths = getattr(self._split(split), 'paths', None)
    return None if paths is None else paths()

  def steps_per_epoch(self, batch_size):
    """Training batches per epoch (the last partial batch is dropped)."""
    batch_size = _check_batch_size(batch_size)
    n = self.num_examples['train']
    if batch_size > n:
      raise DataError(f'batch_size={batch_size} is larger than the {n} '
                      f'training images of {self.name!r}; use a batch size '
                      f'of at most {n}.')
    return n // batch_size

  def train_batches(self, batch_size, start_step=0):
    """Infinite, deterministic training batches, resumable at any step.

    Args:
      batch_size: Images per batch; every batch is full.
      start_step: Global step of the first batch produced. A run killed after
        ``k`` steps and restarted with ``start_step=k`` sees exactly the
        batches (and flips) it would have seen.

    Returns:
      `tf.data.Dataset` of uint8 ``[batch_size, H, W, C]``.
    """
    steps = self.steps_per_epoch(batch_size)
    if (not isinstance(start_step, numbers.Integral) or
        isinstance(start_step, bool) or start_step < 0):
      raise DataError(f'start_step must be a non-negative integer, got '
                      f'{start_step!r}.')
    ds = self._splits['train'].train_stream(batch_size, steps,
                                            int(start_step), self._seed)
    if self._horizontal_flip:
      seed = self._seed
      ds = ds.map(lambda step, x: flip_batch(step, x, seed),
                  num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    else:
      ds = ds.map(lambda step, x: x)
    return ds.prefetch(tf.data.AUTOTUNE)

  def eval_batches(self, split, batch_size):
    """Every image of ``split`` exactly once, in order, unflipped.

    Returns:
      Finite `tf.data.Dataset` of uint8 ``[b, H, W, C]``, ``b <= batch_size``
      (only the last batch may be smaller).
    """
    backend = self._split(split)
    batch_size = _check_batch_size(batch_size)
    return backend.eval_stream(batch_size).prefetch(tf.data.AUTOTUNE)


def _check_batch_size(batch_size):
  if (not isinstance(batch_size, numbers.Integral) or
      isinstance(batch_size, bool) or batch_size < 1):
    raise DataError(f'batch_size must be a positive integer, got '
                    f'{batch_size!r}.')
  return int(batch_size)
