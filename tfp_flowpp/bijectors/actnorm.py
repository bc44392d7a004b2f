"""Activation normalisation with data-dependent initialisation (Glow, §3.1).

    y = x · exp(log_scale) + shift

``log_scale`` and ``shift`` are per channel (Glow) or per element
(``per_element=True``: one pair per (h, w, c), the "Norm" layer of the
official Flow++ code). ``log|det J| = n · Σ log_scale`` with ``n = H·W`` per
channel or ``1`` per element.

Data-dependent initialisation: the first forward (data → latent) call sets
the parameters so that this batch comes out with zero mean and unit variance
per channel (or per element), and flips the non-trainable ``initialized``
flag, which is checkpointed. It runs eagerly, under `tf.function` and XLA
(a `tf.cond` on the flag) and under a `tf.distribute` strategy: in the
cross-replica context (how `DiscreteImageFlow.initialize` is called by the
trainer) the assignment updates every replica; inside a multi-replica
``strategy.run`` the layer must already be initialised and says so.
"""

import tensorflow as tf
import tensorflow_probability as tfp

from tfp_flowpp.bijectors import shapes

tfb = tfp.bijectors

__all__ = ['ActNorm']


class ActNorm(tfb.Bijector):
  """Affine normalisation ``y = x·exp(log_scale) + shift`` with data init."""

  def __init__(self,
               event_shape,
               per_element=False,
               data_init=True,
               epsilon=1e-6,
               dtype=tf.float32,
               validate_args=False,
               name='act_norm'):
    """Creates the layer.

    Args:
      event_shape: ``(H, W, C)``.
      per_element: one scale/shift per element instead of per channel.
      data_init: initialise from the first batch (else identity).
      epsilon: added to the variance at initialisation.
      dtype: variable dtype.
      validate_args: check shapes at run time.
      name: bijector name.
    """
    parameters = dict(locals())
    self._event_shape_tuple = tuple(int(d) for d in event_shape)
    if len(self._event_shape_tuple) != 3:
      raise ValueError(f'ActNorm needs an (H, W, C) event, got {event_shape}.')
    self._per_element = bool(per_element)
    self._data_init = bool(data_init)
    self._epsilon = float(epsilon)
    param_shape = (
        self._event_shape_tuple
        if per_element else self._event_shape_tuple[-1:])
    with tf.name_scope(name) as name:
      self.log_scale = tf.Variable(
          tf.zeros(param_shape, dtype), name='log_scale')
      self.shift = tf.Variable(tf.zeros(param_shape, dtype), name='shift')
      self.initialized = tf.Variable(
          not self._data_init, trainable=False, name='initialized')
      super().__init__(
          forward_min_event_ndims=3,
          validate_args=validate_args,
          parameters=parameters,
          name=name)

  @property
  def per_element(self):
    return self._per_element

  def _ldj_multiplier(self):
    h, w, _ = self._event_shape_tuple
    return 1 if self._per_element else h * w

  def _maybe_initialize(self, x):
    """Sets scale/shift from ``x`` the first time (see module docstring)."""
    if not self._data_init:
      return
    replica_context = tf.distribute.get_replica_context()
    if (replica_context is not None and
        replica_context.num_replicas_in_sync > 1):
      tf.debugging.assert_equal(
          self.initialized,
          True,
          message=(f'{self.name} is not initialised; call '
                   '`initialize(batch)` in the cross-replica context before '
                   '`strategy.run`.'))
      return
    reduce_axes = list(range(x.shape.rank - (3 if self._per_element else 1)))

    def initialize():
      mean, variance = tf.nn.moments(x, axes=reduce_axes)
      log_scale = -0.5 * tf.math.log(variance + self._epsilon)
      self.log_scale.assign(tf.cast(log_scale, self.log_scale.dtype))
      self.shift.assign(tf.cast(-mean * tf.exp(log_scale), self.shift.dtype))
      self.initialized.assign(True)
      return tf.constant(True)

    tf.cond(self.initialized, lambda: tf.constant(False), initialize)

  def _batch_ldj(self, x, sign):
    ldj = sign * self._ldj_multiplier() * tf.reduce_sum(self.log_scale)
    return tf.fill(tf.shape(x)[:-3], tf.cast(ldj, x.dtype))

  def _forward(self, x):
    shapes.check_event_shape(x, self._event_shape_tuple, self.name)
    self._maybe_initialize(x)
    return x * tf.exp(self.log_scale) + self.shift

  def _inverse(self, y):
    shapes.check_event_shape(y, self._event_shape_tuple, self.name)
    return (y - self.shift) * tf.exp(-self.log_scale)

  def _forward_log_det_jacobian(self, x):
    self._maybe_initialize(x)
    return self._batch_ldj(x, 1.)

  def _inverse_log_det_jacobian(self, y):
    return self._batch_ldj(y, -1.)

  def reset_initialization(self):
    """Makes the next forward call re-run the data-dependent init."""
    self.initialized.assign(not self._data_init)

