"""Bits/dim of a model over a dataset split, optionally distributed."""

import time

import tensorflow as tf

__all__ = ['BpdEvaluator']


class BpdEvaluator:
  """Mean bits/dim over batches, with the single-sample or IW bound.

  Builds one `tf.function` per importance-sample count. Under a
  `tf.distribute` strategy each replica evaluates its share of every batch
  and the sums are reduced.
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

    def replica_fn(images, seed):
      ctx = tf.distribute.get_replica_context()
      seed = tf.random.experimental.stateless_fold_in(
          seed, ctx.replica_id_in_sync_group)
      if num_samples == 1:
        bound = model.log_prob(images, seed=seed)
      else:
        bound = model.importance_weighted_log_prob(
            images, num_samples, seed=seed)
      bpd = model.nats_to_bits_per_dim(bound)
      return tf.reduce_sum(bpd), tf.cast(tf.size(bpd), bpd.dtype)

    @tf.function(reduce_retracing=True)
    def step(images, seed):
      total, count = strategy.run(replica_fn, args=(images, seed))
      return (strategy.reduce(tf.distribute.ReduceOp.SUM, total, axis=None),
              strategy.reduce(tf.distribute.ReduceOp.SUM, count, axis=None))

    self._functions[num_samples] = step
    return step

  def evaluate(self, batches, num_samples=1, max_images=0):
    """Returns ``dict(bpd, num_images, seconds)`` over a finite dataset."""
    step = self._function(int(num_samples))
    if max_images:
      batches = batches.unbatch().take(max_images).batch(
          int(next(iter(batches)).shape[0]))
    distributed = self.strategy.experimental_distribute_dataset(batches)
    total, count, start = 0., 0., time.time()
    for i, images in enumerate(distributed):
      seed = tf.constant([self.seed, i], tf.int32)
      batch_total, batch_count = step(images, seed)
      total += float(batch_total)
      count += float(batch_count)
    if not count:
      raise ValueError('No images to evaluate.')
    return {
        'bpd': total / count,
        'num_images': int(count),
        'seconds': time.time() - start
    }
