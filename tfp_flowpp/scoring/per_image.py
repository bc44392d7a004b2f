"""Per-image bits/dim of a `DiscreteImageFlow`, streamed over batches.

`BpdEvaluator` (training) averages over a split; scoring needs one number per
image. `PerImageBpd` re-batches any image source (an array, or an iterable of
batches such as `ImageDataset.eval_batches`) into batches of exactly
``batch_size`` images, pads the last one by repeating its final image, and
runs one `tf.function` per bound with a fully static input shape, so each
bound traces once and the padding costs nothing but its compute. The results
of the padding are dropped.

The dequantization noise of batch ``i`` of a pass (0-based, in order) comes
from the stateless seed ``(seed, i)``, so the same images, ``batch_size`` and
``seed`` give the same numbers in every process, however the source was
batched.
"""

import numpy as np
import tensorflow as tf

__all__ = ['PerImageBpd', 'check_images', 'check_same_images', 'rebatch']


def check_same_images(model, other, what):
  """Raises ValueError unless ``other`` takes the model's kind of image.

  Args:
    model: the scored model (``image_shape``, ``num_levels``).
    other: a second model or codec with the same two attributes.
    what: what ``other`` is, for the message (e.g. 'the background model').
  """
  shape = 'x'.join(map(str, model.image_shape))
  other_shape = 'x'.join(map(str, other.image_shape))
  if tuple(model.image_shape) != tuple(other.image_shape):
    raise ValueError(f'{what} takes {other_shape} images but the model '
                     f'takes {shape}; train it on the same kind of images.')
  if int(model.num_levels) != int(other.num_levels):
    raise ValueError(f'{what} has {other.num_levels} levels but the model '
                     f'has {model.num_levels}; train it on the same kind of '
                     'images.')


def check_images(images, image_shape, num_levels, what='images'):
  """Checks a batch of integer images for a model; returns it as uint8.

  Args:
    images: array-like ``[N, H, W, C]`` of integers.
    image_shape: ``(H, W, C)`` the model takes.
    num_levels: L; pixel values must be in ``[0, L)``.
    what: name of the input, for messages.

  Returns:
    uint8 ``np.ndarray`` ``[N, H, W, C]``.

  Raises:
    ValueError: wrong rank, shape, dtype or value range (one line).
  """
  images = np.asarray(images)
  shape = 'x'.join(map(str, image_shape))
  if images.ndim != 4 or tuple(images.shape[1:]) != tuple(image_shape):
    got = ('x'.join(map(str, images.shape[1:])) if images.ndim == 4 else
           f'an array of shape {images.shape}')
    raise ValueError(f'{what} are {got} but the model takes [N, {shape}] '
                     f'images.')
  if not np.issubdtype(images.dtype, np.integer):
    raise ValueError(f'{what} have dtype {images.dtype}; pass integer pixel '
                     f'levels in [0, {num_levels}).')
  if images.size and (images.min() < 0 or images.max() >= num_levels):
    raise ValueError(f'{what} have pixel values in [{images.min()}, '
                     f'{images.max()}] but the model has {num_levels} levels '
                     f'([0, {num_levels})).')
  return images.astype(np.uint8, copy=False)


def rebatch(images, batch_size):
  """Yields consecutive ``[b, ...]`` numpy batches with ``b == batch_size``.

  Only the last batch may be smaller.

  Args:
    images: an array ``[N, ...]`` or an iterable of such arrays / Tensors.
    batch_size: images per yielded batch.
  """
  if isinstance(images, (np.ndarray, tf.Tensor)):
    images = np.asarray(images)
    for start in range(0, len(images), batch_size):
      yield images[start:start + batch_size]
    return
  pending, count = [], 0
  for batch in images:
    batch = np.asarray(batch)
    while len(batch):
      take = min(batch_size - count, len(batch))
      pending.append(batch[:take])
      count += take
      batch = batch[take:]
      if count == batch_size:
        yield np.concatenate(pending)
        pending, count = [], 0
  if count:
    yield np.concatenate(pending)


class PerImageBpd:
  """Bits/dim of every image under a model, one static-shape call per batch.

  ``num_samples = 1`` is the single-sample dequantization bound
  (`DiscreteImageFlow.log_prob`), ``k > 1`` the importance-weighted bound
  (`DiscreteImageFlow.importance_weighted_log_prob`); both are converted with
  `DiscreteImageFlow.nats_to_bits_per_dim`. A class-conditional model has
  no labels here: it scores the marginal bound on log P(x) =
  log Σ_y π_y P(x | y) (`DiscreteImageFlow.marginal_log_prob`, K bounds per
  image).
  """

  def __init__(self, model, batch_size=256, seed=0):
    """Creates the scorer.

    Args:
      model: a `DiscreteImageFlow` (e.g. from
        `tfp_flowpp.training.restore_for_inference`).
      batch_size: images per model call.
      seed: seed of the dequantization noise.
    """
    self.model = model
    self.batch_size = int(batch_size)
    self.seed = int(seed)
    if self.batch_size < 1:
      raise ValueError(f'batch_size must be >= 1, got {batch_size}.')
    self._functions = {}

  def _function(self, num_samples):
    if num_samples in self._functions:
      return self._functions[num_samples]
    model = self.model
    spec = tf.TensorSpec((self.batch_size,) + tuple(model.image_shape),
                         tf.uint8)

    @tf.function(input_signature=[spec, tf.TensorSpec([2], tf.int32)])
    def bpd(images, seed):
      bound = model.marginal_log_prob(images, num_samples, seed=seed)
      return model.nats_to_bits_per_dim(bound)

    self._functions[num_samples] = bpd
    return bpd

  def batch(self, images, index, num_samples=1):
    """Bits/dim of one batch of at most ``batch_size`` images.

    Args:
      images: integer array ``[b, H, W, C]``, ``1 <= b <= batch_size``.
      index: position of the batch in its pass (selects the noise seed).
      num_samples: importance samples k (1 = single-sample bound).

    Returns:
      float64 ``np.ndarray`` ``[b]``.
    """
    images = check_images(images, self.model.image_shape,
                          self.model.num_levels)
    count = len(images)
    if not 1 <= count <= self.batch_size:
      raise ValueError(f'a batch must hold 1..{self.batch_size} images, got '
                       f'{count}.')
    if count < self.batch_size:
      padding = np.repeat(images[-1:], self.batch_size - count, axis=0)
      images = np.concatenate([images, padding])
    seed = tf.constant([self.seed, int(index)], tf.int32)
    bpd = self._function(int(num_samples))(tf.constant(images), seed)
    return bpd.numpy()[:count].astype(np.float64)

  def __call__(self, images, num_samples=1, callback=None):
    """Bits/dim of every image, in order.

    Args:
      images: integer array ``[N, H, W, C]`` or an iterable of batches
        (e.g. ``ImageDataset.eval_batches(split, b)``).
      num_samples: importance samples k (1 = single-sample bound).
      callback: optional ``callback(num_images_done)`` after each batch
        (progress display).

    Returns:
      float64 ``np.ndarray`` ``[N]``.

    Raises:
      ValueError: no images, or images the model cannot score.
    """
    results, done = [], 0
    for index, batch in enumerate(rebatch(images, self.batch_size)):
      results.append(self.batch(batch, index, num_samples))
      done += len(batch)
      if callback is not None:
        callback(done)
    if not results:
      raise ValueError('no images to score.')
    return np.concatenate(results)
