"""Activation normalisation with data-dependent initialisation (Glow, §3.1).

A per-channel (Glow) or per-element (Flow++) affine map whose first forward
call standardises the data; see `ActNorm`.
"""

import tensorflow as tf
import tensorflow_probability as tfp

from tfp_flowpp.bijectors import shapes

tfb = tfp.bijectors

__all__ = ['ActNorm']


class ActNorm(tfb.Bijector):
  """Affine normalisation ``y = x·exp(log_scale) + shift`` with data init.

  Activation normalisation [(Kingma & Dhariwal, 2018)][1], §3.1, on an
  ``(H, W, C)`` event:

  ```none
  forward:  y = x · exp(log_scale) + shift
  inverse:  x = (y − shift) · exp(−log_scale)
  log|det ∂y/∂x| = n · Σ log_scale,   n = H·W per channel, 1 per element
  ```

  ``log_scale`` and ``shift`` have shape ``[C]`` (per channel, Glow) or,
  with ``per_element=True``, ``[H, W, C]`` (the "Norm" layer of the official
  Flow++ code [(Ho et al., 2019)][2]).

  Data-dependent initialisation: the first forward (data → latent) call --
  ``forward`` or ``forward_log_det_jacobian`` -- sets

  ```none
  log_scale = −½ log(Var[x] + epsilon),   shift = −E[x] · exp(log_scale)
  ```

  with moments over the batch and spatial axes (per channel) or the batch
  axes only (per element), so that batch comes out with zero mean and unit
  variance, and flips the non-trainable, checkpointed ``initialized`` flag.
  The inverse direction never initialises. It works eagerly, under
  `tf.function` and XLA (a `tf.cond` on the flag) and under a
  `tf.distribute` strategy: in the cross-replica context (how
  `DiscreteImageFlow.initialize` is called by the trainer) the assignment
  updates every replica; inside a multi-replica ``strategy.run`` the layer
  must already be initialised and an assertion says so.
  `reset_initialization` re-arms it; ``data_init=False`` starts at the
  identity and never initialises.

  #### Examples

  >>> import numpy as np
  >>> import tensorflow as tf
  >>> from tfp_flowpp import bijectors as fb
  >>> x = 3. + 5. * tf.random.stateless_normal([64, 2, 2, 3], seed=[1, 2])
  >>> norm = fb.ActNorm(event_shape=(2, 2, 3))
  >>> z = norm.forward(x)  # The first forward call initialises.
  >>> bool(norm.initialized)
  True
  >>> mean, variance = tf.nn.moments(z, axes=[0, 1, 2])
  >>> np.allclose(mean, 0., atol=1e-5), np.allclose(variance, 1., atol=1e-4)
  (True, True)
  >>> ldj = norm.forward_log_det_jacobian(x, event_ndims=3)
  >>> np.allclose(ldj, 2 * 2 * tf.reduce_sum(norm.log_scale))
  True
  >>> np.allclose(norm.inverse(tf.identity(z)), x, atol=1e-5)
  True

  #### References

  [1]: Diederik P. Kingma and Prafulla Dhariwal. Glow: Generative Flow with
       Invertible 1x1 Convolutions. In _Neural Information Processing
       Systems_, 2018. https://arxiv.org/abs/1807.03039

  [2]: Jonathan Ho, Xi Chen, Aravind Srinivas, Yan Duan and Pieter Abbeel.
       Flow++: Improving Flow-Based Generative Models with Variational
       Dequantization and Architecture Design. In _International Conference
       on Machine Learning_, 2019. https://arxiv.org/abs/1902.00275
  """

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
      data_init: initialise from the first forward batch (else start at the
        identity).
      epsilon: added to the variance at initialisation.
      dtype: variable dtype.
      validate_args: Python `bool`, passed to `tfb.Bijector` (event shapes
        are checked at trace time either way).
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
    """Sets scale/shift from ``x`` the first time (see class docstring)."""
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

