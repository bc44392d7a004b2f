"""Splits streamed from encoded records, for data too big for memory.

`streaming_dataset(source)` builds an `ImageDataset` whose splits read a
source's still-encoded ``(image, label)`` records (`tfds_source.TfdsSource`
is the one source that streams). Each epoch reads the split in file order
(TFDS stored it shuffled), rotates it by a random offset and permutes
windows of `SHUFFLE_BUFFER` examples (`stateless_shuffle.window_shuffle`),
all keyed by ``(seed, epoch)``. Resuming skips still-encoded examples to the
exact step (reading, not decoding, at most one epoch).

A source provides: ``name``, ``config`` (`DataConfig`), ``image_shape``,
``num_levels``, ``class_names``, ``train_split``, ``test_split`` (or None),
``split_sizes`` (dict), ``encoded(split)`` (dataset of ``(encoded image,
label)`` in file order, class-filtered), ``decode(encoded, label)`` (decoded
and cropped, not bit-reduced) and ``read_labels(split)``.
"""

import logging

import numpy as np
import tensorflow as tf

from tfp_flowpp.data import pipeline
from tfp_flowpp.data import splits as splits_lib
from tfp_flowpp.data import stateless_shuffle
from tfp_flowpp.data import transforms

__all__ = ['SHUFFLE_BUFFER', 'StreamSplit', 'streaming_dataset']

_LOG = logging.getLogger(__name__)

# Examples per streaming shuffle window (held encoded, so small).
SHUFFLE_BUFFER = 10_000


def streaming_dataset(source):
  """An `ImageDataset` whose splits stream from ``source`` (see module doc)."""
  config = source.config
  if config.classes:
    train_labels = source.read_labels(source.train_split)
    transforms.check_classes_present(config.classes, np.unique(train_labels),
                                     source.name, source.class_names)
    n = len(train_labels)
  else:
    n = source.split_sizes[source.train_split]
  indices = splits_lib.split_indices(
      n, has_official_test=source.test_split is not None, config=config,
      name=source.name)
  backends = {}
  for split in ('train', 'validation'):
    backends[split] = StreamSplit(source, source.train_split, n,
                                  indices[split])
  if source.test_split is not None:
    backends['test'] = StreamSplit(source, source.test_split, None, None)
  else:
    backends['test'] = StreamSplit(source, source.train_split, n,
                                   indices['test'])
  _LOG.info('Streaming dataset %s (%s).', source.name, {
      s: b.num_examples for s, b in backends.items()})
  return pipeline.ImageDataset(
      name=source.name, image_shape=source.image_shape,
      num_levels=source.num_levels, splits=backends,
      class_names=source.class_names, seed=config.seed,
      horizontal_flip=config.horizontal_flip, config=config,
      class_labels=(None if source.class_names is None else
                    transforms.model_class_labels(config.classes, (),
                                                  source.class_names)),
      perturbation_rate=config.perturbation_rate)


class StreamSplit:
  """One streamed split: a subset (by index) of one of the source's splits.

  Args:
    source: The source (see module docstring).
    source_split: The source's split to read.
    total: Number of (class-filtered) examples in ``source_split``, or None
      to count them.
    indices: Sorted positions to keep, or None for all.
  """

  streaming = True

  def __init__(self, source, source_split, total, indices):
    self._source = source
    self._source_split = source_split
    self._indices = indices
    if indices is not None:
      self.num_examples = len(indices)
      self._mask = np.zeros([total], bool)
      self._mask[indices] = True
    else:
      self._mask = None
      if source.config.classes:
        self.num_examples = len(source.read_labels(source_split))
      else:
        self.num_examples = source.split_sizes[source_split]

  def _encoded(self):
    ds = self._source.encoded(self._source_split)
    if self._mask is not None:
      mask = tf.constant(self._mask)
      ds = ds.enumerate().filter(lambda i, ex: tf.gather(mask, i)).map(
          lambda i, ex: ex)
    return ds

  def _finish(self, ds, with_labels=False):
    """Decodes, crops and reduces bits of ``(encoded, label)`` elements."""
    source = self._source
    num_bits = source.config.num_bits
    shape = source.image_shape

    def finish(enc, lab):
      image = transforms.reduce_bits(
          tf.ensure_shape(source.decode(enc, lab)[0], shape), num_bits)
      return (image, lab) if with_labels else image

    return ds.map(finish, num_parallel_calls=tf.data.AUTOTUNE,
                  deterministic=True)

  def images(self):
    raise AssertionError('streaming splits have no arrays')

  def labels(self):
    """The split's labels (reads the records, decodes no image)."""
    labels = self._source.read_labels(self._source_split)
    return labels if self._mask is None else labels[self._mask]

  def train_stream(self, batch_size, steps_per_epoch, start_step, seed,
                   with_labels=False):
    """Infinite ``(global_step, batch)``; epoch e shuffled by (seed, e).

    Resuming at ``start_step`` skips the epoch's first batches as encoded
    records (read, not decoded).
    """
    first_epoch, first_batch = divmod(start_step, steps_per_epoch)
    base = self._encoded()
    window = min(SHUFFLE_BUFFER, max(1, self.num_examples))
    finish = self._finish

    def epoch(e):
      skip_batches = tf.where(e == first_epoch, tf.constant(first_batch,
                                                            tf.int64), 0)
      ds = stateless_shuffle.window_shuffle(base, window, seed, e)
      ds = ds.skip(skip_batches * batch_size)
      ds = finish(ds, with_labels).batch(batch_size, drop_remainder=True)
      return ds.take(steps_per_epoch - skip_batches)

    batches = tf.data.Dataset.range(first_epoch, 2**62).flat_map(epoch)
    steps = tf.data.Dataset.range(start_step, 2**62)
    if with_labels:
      return tf.data.Dataset.zip((steps, batches)).map(
          lambda step, batch: (step,) + batch)
    return tf.data.Dataset.zip((steps, batches))

  def eval_stream(self, batch_size, with_labels=False):
    return self._finish(self._encoded(), with_labels).batch(batch_size)
