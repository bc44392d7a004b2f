"""A `tf.data` window shuffle keyed only by ``(seed, epoch)``.

Unlike `tf.data.Dataset.shuffle`, the order does not depend on the
`tf.random` global seed or on any op seed counter, so a resumed process
reproduces it whatever seeds the trainer sets.
"""

import tensorflow as tf

__all__ = ['window_shuffle']

_SHUFFLE_TAG = 0x5EED


def window_shuffle(ds, window, seed, epoch):
  """Shuffles ``ds`` with a buffer of ``window``, keyed only by (seed, epoch).

  The stream is rotated by a random offset in ``[0, window)`` (so window
  boundaries move every epoch), cut into windows of ``window`` consecutive
  elements, and each window is permuted.

  Args:
    ds: Finite dataset of tuples of tensors (e.g. ``(encoded image, label)``)
      in a fixed order.
    window: Shuffle window (buffer) size, a Python int >= 1.
    seed: Python int seed.
    epoch: int64 scalar Tensor (or int).

  Returns:
    The shuffled dataset: a permutation of ``ds``.
  """
  key = tf.random.experimental.stateless_fold_in(
      tf.constant([seed, _SHUFFLE_TAG], tf.int64), tf.cast(epoch, tf.int64))
  offset = tf.random.stateless_uniform([], seed=key, minval=0,
                                       maxval=window, dtype=tf.int64)
  ds = ds.skip(offset).concatenate(ds.take(offset))

  def permute(index, chunk):
    chunk_key = tf.random.experimental.stateless_fold_in(key, index)
    n = tf.shape(chunk[0])[0]
    order = tf.argsort(tf.random.stateless_uniform([n], seed=chunk_key))
    return tuple(tf.gather(part, order) for part in chunk)

  return ds.batch(window).enumerate().map(permute).unbatch()
