"""Bits/dim of a model over a dataset split, optionally distributed."""

import time

import tensorflow as tf

__all__ = ['BpdEvaluator']


class BpdEvaluator:
  """Mean bits/dim over batches, with the single-sample or IW bound.

  Builds one `tf.function` per importance-sample count, traced once with a
  static batch size: every batch is padded with zero images to the size of
  the first batch (rounded up to a multiple of the replicas) and the padding
  is masked out of the sums. Flows whose shapes must be static at trace time
  (e.g. TFP's `tfb.Glow`) therefore evaluate too, and a short last batch
  costs no second trace. Under a `tf.distribute` strategy each replica
  evaluates its share of every batch and the sums are reduced. Batches of
  ``(images, labels)`` give the class-conditional bits/dim of a
  class-conditional model (the labels are padded and masked the same way).
  """

  def __init__(self, model, strategy=None, seed=0):
    self.model = model
    self.strategy = strategy or tf.distribute.get_strategy()
    self.seed = int(seed)
    self._functions = {}

  def _function(self, num_samples):
    if num_samples in self._functions:
      return self._functions[num_samples]
    model, strategy = self.model, self.strategy

    def replica_fn(batch, mask, seed):
      images, labels = batch if isinstance(batch, tuple) else (batch, None)
      ctx = tf.distribute.get_replica_context()
      seed = tf.random.experimental.stateless_fold_in(
          seed, ctx.replica_id_in_sync_group)
      # Only conditional models (labelled batches) get ``labels``.
      kwargs = {} if labels is None else {'labels': labels}
      if num_samples == 1:
        bound = model.log_prob(images, seed=seed, **kwargs)
      else:
        bound = model.importance_weighted_log_prob(
            images, num_samples, seed=seed, **kwargs)
      bpd = model.nats_to_bits_per_dim(bound)
      total = tf.reduce_sum(tf.where(mask, bpd, tf.zeros_like(bpd)))
      return total, tf.reduce_sum(tf.cast(mask, bpd.dtype))

    @tf.function
    def step(images, mask, seed):
      total, count = strategy.run(replica_fn, args=(images, mask, seed))
      return (strategy.reduce(tf.distribute.ReduceOp.SUM, total, axis=None),
              strategy.reduce(tf.distribute.ReduceOp.SUM, count, axis=None))

    self._functions[num_samples] = step
    return step

  def _padded(self, batches, batch_size):
    """``(images padded to a static batch, mask of the real images)``."""
    replicas = self.strategy.num_replicas_in_sync
    padded = -(-batch_size // replicas) * replicas
    spec = batches.element_spec
    labelled = isinstance(spec, tuple)
    image_spec = spec[0] if labelled else spec
    shape = tf.TensorShape([padded]).concatenate(image_spec.shape[1:])

    def pad(images, labels=None):
      n = tf.shape(images)[0]
      with tf.control_dependencies([
          tf.debugging.assert_less_equal(
              n, padded, message=f'a batch is larger than the first one '
              f'({batch_size} images); batches may only shrink')
      ]):
        paddings = tf.concat(
            [[[0, padded - n]], tf.zeros([images.shape.rank - 1, 2], tf.int32)],
            axis=0)
      images = tf.ensure_shape(tf.pad(images, paddings), shape)
      mask = tf.range(padded) < n
      if labelled:
        labels = tf.ensure_shape(tf.pad(labels, paddings[:1]), [padded])
        return (images, labels), mask
      return images, mask

    return batches.map(pad)

  def evaluate(self, batches, num_samples=1, max_images=0):
    """Mean bits/dim of every image in ``batches``.

    Args:
      batches: Finite `tf.data.Dataset` of ``[b, H, W, C]`` integer images
        (or of ``(images, labels [b])`` for a class-conditional model), e.g.
        `ImageDataset.eval_batches`; no batch may be larger than the first.
      num_samples: Importance samples k (1: the single-sample bound).
      max_images: Evaluate only the first N images (0: all).

    Returns:
      ``dict(bpd, num_images, seconds)``.

    Raises:
      ValueError: ``batches`` holds no images.
    """
    step = self._function(int(num_samples))
    first = next(iter(batches), None)
    if isinstance(first, tuple):
      first = first[0]
    if first is None or not first.shape[0]:
      raise ValueError('No images to evaluate.')
    batch_size = int(first.shape[0])
    if max_images:
      batch_size = min(batch_size, int(max_images))  # Pad no more than that.
      batches = batches.unbatch().take(max_images).batch(batch_size)
    distributed = self.strategy.experimental_distribute_dataset(
        self._padded(batches, batch_size))
    total, count, start = 0., 0., time.time()
    for i, (batch, mask) in enumerate(distributed):
      seed = tf.constant([self.seed, i], tf.int32)
      batch_total, batch_count = step(batch, mask, seed)
      total += float(batch_total)
      count += float(batch_count)
    if not count:
      raise ValueError('No images to evaluate.')
    return {
        'bpd': total / count,
        'num_images': int(count),
        'seconds': time.time() - start
    }
