"""Dynamic loss scaling for float16 networks (``--precision=mixed_float16``).

`DynamicLossScale` holds the scale and the count of good steps as
checkpointed variables that exist under every precision (kept, unused and
unchanged unless float16), so a checkpoint moves between precisions and a
float16 run resumed from a float32 checkpoint starts at the initial scale.

The `tf_keras.mixed_precision.LossScaleOptimizer` is not used because it
wraps the optimizer: the optimizer's variables move to
``optimizer/inner_optimizer/...`` in the checkpoint (a float16 run could no
longer resume under another precision, nor a float32 checkpoint under
float16), and it skips non-finite steps inside ``apply_gradients``, where
the trainer's own skip (counted, all replicas agreeing) happens earlier.
"""

import tensorflow as tf

__all__ = ['DynamicLossScale']


class DynamicLossScale(tf.Module):
  """Dynamic loss scale: halve on overflow, double after a run of good steps.

  The scheme of [(Micikevicius et al., 2018)][1]: the loss is multiplied by
  ``S`` before differentiation and the gradients divided by ``S`` after
  (so small float16 gradients do not underflow), and

  ```none
  loss and gradients finite         apply;  after `growth_interval` such
                                    steps in a row, S ← S · factor
  loss finite, gradients not, S > 1 overflow: skip (not a non-finite step),
                                    S ← max(S / factor, 1)
  loss not finite, or S = 1         a non-finite step: skip and count it
  ```

  A disabled scale computes with ``S = 1`` (its variables keep their
  values), and every non-finite step counts.
  `update` must run in a cross-replica context (the trainer calls it in its
  ``merge_call``) on values all replicas agree on.

  #### Examples

  >>> import tensorflow as tf
  >>> from tfp_flowpp.training import loss_scale
  >>> scale = loss_scale.DynamicLossScale(
  ...     enabled=True, initial_scale=8., growth_interval=2)
  >>> finite, inf = tf.constant(True), tf.constant(False)
  >>> [bool(b) for b in scale.update(finite, inf)]  # Overflow.
  [False, False]
  >>> float(scale.scale)
  4.0
  >>> for _ in range(2):
  ...   _ = scale.update(finite, finite)
  >>> float(scale.scale)
  8.0
  >>> [bool(b) for b in scale.update(inf, inf)]  # A real NaN counts.
  [False, True]

  #### References

  [1]: Paulius Micikevicius, Sharan Narang, Jonah Alben, Gregory Diamos,
       Erich Elsen, David Garcia, Boris Ginsburg, Michael Houston, Oleksii
       Kuchaiev, Ganesh Venkatesh and Hao Wu. Mixed Precision Training. In
       _International Conference on Learning Representations_, 2018.
       https://arxiv.org/abs/1710.03740
  """

  def __init__(self,
               enabled,
               initial_scale=2.**15,
               growth_interval=2000,
               factor=2.,
               name='loss_scale'):
    """Creates the scale's variables (in the active strategy's scope).

    Args:
      enabled: Python `bool`; False computes with ``S = 1``.
      initial_scale: ``S`` of a fresh run.
      growth_interval: good steps in a row before ``S`` grows.
      factor: growth and shrink factor (> 1).
      name: module name.
    """
    super().__init__(name=name)
    if factor <= 1. or growth_interval < 1 or initial_scale < 1.:
      raise ValueError(
          f'Bad loss scale: initial_scale={initial_scale}, growth_interval='
          f'{growth_interval}, factor={factor}.')
    self.enabled = bool(enabled)
    self.growth_interval = int(growth_interval)
    self.factor = float(factor)
    with self.name_scope:
      aggregation = tf.VariableAggregation.ONLY_FIRST_REPLICA
      self.scale = tf.Variable(
          float(initial_scale),
          trainable=False,
          dtype=tf.float32,
          name='scale',
          aggregation=aggregation)
      self.good_steps = tf.Variable(
          0,
          trainable=False,
          dtype=tf.int64,
          name='good_steps',
          aggregation=aggregation)

  def scale_loss(self, loss):
    """``loss · S`` (``loss`` itself when disabled)."""
    if not self.enabled:
      return loss
    return loss * tf.cast(self.scale, loss.dtype)

  def unscale(self, grads):
    """Gradients of the scaled loss → gradients of the loss."""
    if not self.enabled:
      return grads
    inverse = 1. / self.scale
    return [None if g is None else g * tf.cast(inverse, g.dtype) for g in grads]

  def update(self, loss_finite, grads_finite):
    """Updates ``S``; returns ``(apply, count_as_non_finite)`` (bool tensors).

    Args:
      loss_finite: the (unscaled) loss is finite on every replica.
      grads_finite: every gradient is finite on every replica.
    """
    apply = tf.logical_and(loss_finite, grads_finite)
    if not self.enabled:
      return apply, tf.logical_not(apply)
    overflow = tf.logical_and(
        tf.logical_and(loss_finite, tf.logical_not(grads_finite)),
        self.scale > 1.)

    def grow():
      good = self.good_steps + 1
      full = good >= self.growth_interval
      return (tf.where(full, self.scale * self.factor, self.scale),
              tf.where(full, tf.zeros_like(good), good))

    def shrink():
      return (tf.maximum(self.scale / self.factor, 1.),
              tf.zeros_like(self.good_steps))

    def keep():
      return self.scale, tf.zeros_like(self.good_steps)

    scale, good = tf.cond(
        apply, grow, lambda: tf.cond(overflow, shrink, keep))
    self.scale.assign(scale)
    self.good_steps.assign(good)
    return apply, tf.logical_not(tf.logical_or(apply, overflow))
