"""`ImageDataset`: split sizes, resumable training batches, eval batches.

A data set is a handful of named splits (``'train'``, ``'validation'``,
``'test'``). Each split is held by a backend: `ArraySplit` (numpy in memory,
used by every source small enough) or `streaming.StreamSplit` (big TFDS
data). Both give the same guarantees:

* Epoch ``e`` of training visits the examples in an order fixed by
  ``(seed, e)``; global batch ``k`` is batch ``k % steps_per_epoch`` of epoch
  ``k // steps_per_epoch``, so ``train_batches(b, start_step=k)`` resumes a
  killed run exactly.
* Horizontal flips and pixel perturbations (training only) come from
  stateless RNGs keyed by ``(seed, global step)``, so resumed runs flip and
  perturb the same images.
* ``with_labels=True`` batches are ``(images, labels)`` in the same order,
  labels mapped to the class indices 0..K-1 of a class-conditional model
  (`class_labels` holds the data set label of each index).
"""

import numbers

import numpy as np
import tensorflow as tf

from tfp_flowpp.data import splits as splits_lib
from tfp_flowpp.data import transforms
from tfp_flowpp.data.errors import DataError

__all__ = ['ArraySplit', 'ImageDataset', 'SPLITS', 'flip_batch',
           'perturb_batch']

SPLITS = ('train', 'validation', 'test')

# Folded into the flip RNG key so flips are independent of any other
# stateless randomness a trainer keys by (seed, step), e.g. dequantization.
_FLIP_TAG = 0x5F11
_PERTURB_TAG = 0x9E27


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


def perturb_batch(step, batch, seed, rate, num_levels):
  """`transforms.perturb_pixels` of a training batch, keyed by (seed, step).

  Args:
    step: int64 scalar Tensor, the global training step of ``batch``.
    batch: integer ``[B, H, W, C]`` Tensor.
    seed: Python int, the config seed.
    rate: replacement probability per pixel.
    num_levels: pixel levels L.

  Returns:
    The perturbed batch; the perturbation only depends on ``(seed, step)``.
  """
  key = tf.random.experimental.stateless_fold_in(
      tf.constant([seed, _PERTURB_TAG], tf.int64), tf.cast(step, tf.int64))
  return transforms.perturb_pixels(batch, rate, num_levels, key)


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

  def train_stream(self, batch_size, steps_per_epoch, start_step, seed,
                   with_labels=False):
    """Infinite ``(global_step, batch[, labels])`` from ``start_step``.

    Resuming is O(1): only the permutation of the starting epoch is drawn
    and sliced; no earlier batch is produced.
    """
    images, labels = self._images, self._labels
    n = len(images)

    def generate():
      step = start_step
      while True:
        epoch, first = divmod(step, steps_per_epoch)
        perm = splits_lib.epoch_permutation(n, seed, epoch)
        for i in range(first, steps_per_epoch):
          batch = perm[i * batch_size:(i + 1) * batch_size]
          if with_labels:
            yield step, images[batch], labels[batch]
          else:
            yield step, images[batch]
          step += 1

    signature = (tf.TensorSpec([], tf.int64),
                 tf.TensorSpec((batch_size,) + images.shape[1:], tf.uint8))
    if with_labels:
      signature += (tf.TensorSpec([batch_size], tf.int64),)
    return tf.data.Dataset.from_generator(
        generate, output_signature=signature)

  def eval_stream(self, batch_size, with_labels=False):
    """Finite dataset of the split's images (and labels) in order."""
    images, labels = self._images, self._labels

    def generate():
      for i in range(0, len(images), batch_size):
        if with_labels:
          yield images[i:i + batch_size], labels[i:i + batch_size]
        else:
          yield images[i:i + batch_size]

    signature = tf.TensorSpec((None,) + images.shape[1:], tf.uint8)
    if with_labels:
      signature = (signature, tf.TensorSpec([None], tf.int64))
    return tf.data.Dataset.from_generator(
        generate, output_signature=signature)


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
    class_labels: The label of each class index 0..K-1 of a class-conditional
      model (see `transforms.model_class_labels`), or None without labels.
    config: The `DataConfig` it was loaded with (or None).
  """

  def __init__(self, *, name, image_shape, num_levels, splits, class_names,
               seed=0, horizontal_flip=False, config=None, class_labels=None,
               perturbation_rate=0.):
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
    self._perturbation_rate = float(perturbation_rate)
    self.class_labels = (None if class_labels is None else tuple(
        int(c) for c in class_labels))
    self._label_index = None
    if self.class_labels:
      index = np.full(max(self.class_labels) + 1, -1, np.int32)
      index[list(self.class_labels)] = np.arange(len(self.class_labels))
      self._label_index = index
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

  @property
  def num_classes(self):
    """K of a class-conditional model of this data; None without labels."""
    return None if self.class_labels is None else len(self.class_labels)

  @property
  def model_class_names(self):
    """Names of the class indices 0..K-1 (empty when unnamed/unlabelled)."""
    if not self.class_labels or not self.class_names:
      return ()
    return tuple(
        self.class_names[c] if c < len(self.class_names) else str(c)
        for c in self.class_labels)

  def _check_labelled(self):
    if not self.class_labels:
      raise DataError(
          f'{self.name!r} has no labels, and class conditioning needs them; '
          'use labelled data (folder class subdirectories, npz labels, IDX, '
          'TFDS, digits) or --conditioning=none.')

  def class_indices(self, labels):
    """Data set labels → class indices 0..K-1 (numpy or Tensor)."""
    self._check_labelled()
    if isinstance(labels, np.ndarray):
      return self._label_index[labels].astype(np.int32)
    return tf.gather(tf.constant(self._label_index), labels)

  def class_counts(self):
    """Training images per class index ``[K]`` (numpy int64)."""
    self._check_labelled()
    labels = self._split('train').labels()
    return np.bincount(self.class_indices(np.asarray(labels)),
                       minlength=self.num_classes)

  def steps_per_epoch(self, batch_size):
    """Training batches per epoch (the last partial batch is dropped)."""
    batch_size = _check_batch_size(batch_size)
    n = self.num_examples['train']
    if batch_size > n:
      raise DataError(f'batch_size={batch_size} is larger than the {n} '
                      f'training images of {self.name!r}; use a batch size '
                      f'of at most {n}.')
    return n // batch_size

  def train_batches(self, batch_size, start_step=0, with_labels=False):
    """Infinite, deterministic training batches, resumable at any step.

    Args:
      batch_size: Images per batch; every batch is full.
      start_step: Global step of the first batch produced. A run killed after
        ``k`` steps and restarted with ``start_step=k`` sees exactly the
        batches (flips, perturbations) it would have seen.
      with_labels: Also yield the class indices (int32 ``[batch_size]``).

    Returns:
      `tf.data.Dataset` of uint8 ``[batch_size, H, W, C]``, or of
      ``(images, labels)`` with ``with_labels``.

    Raises:
      DataError: ``with_labels`` for data without labels.
    """
    if with_labels:
      self._check_labelled()
    steps = self.steps_per_epoch(batch_size)
    if (not isinstance(start_step, numbers.Integral) or
        isinstance(start_step, bool) or start_step < 0):
      raise DataError(f'start_step must be a non-negative integer, got '
                      f'{start_step!r}.')
    ds = self._splits['train'].train_stream(
        batch_size, steps, int(start_step), self._seed,
        with_labels=with_labels)
    seed, flip = self._seed, self._horizontal_flip
    rate, levels = self._perturbation_rate, self.num_levels
    index = None if not with_labels else tf.constant(self._label_index)

    def finish(step, x, *labels):
      if flip:
        x = flip_batch(step, x, seed)
      if rate:
        x = perturb_batch(step, x, seed, rate, levels)
      if labels:
        return x, tf.gather(index, labels[0])
      return x

    ds = ds.map(finish, num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)

  def eval_batches(self, split, batch_size, with_labels=False):
    """Every image of ``split`` exactly once, in order, unflipped.

    Returns:
      Finite `tf.data.Dataset` of uint8 ``[b, H, W, C]``, ``b <= batch_size``
      (only the last batch may be smaller); with ``with_labels``, of
      ``(images, class indices int32 [b])``.
    """
    backend = self._split(split)
    batch_size = _check_batch_size(batch_size)
    if not with_labels:
      return backend.eval_stream(batch_size).prefetch(tf.data.AUTOTUNE)
    self._check_labelled()
    index = tf.constant(self._label_index)
    return backend.eval_stream(batch_size, with_labels=True).map(
        lambda x, y: (x, tf.gather(index, y))).prefetch(tf.data.AUTOTUNE)


def _check_batch_size(batch_size):
  if (not isinstance(batch_size, numbers.Integral) or
      isinstance(batch_size, bool) or batch_size < 1):
    raise DataError(f'batch_size must be a positive integer, got '
                    f'{batch_size!r}.')
  return int(batch_size)
