"""Flow++/RealNVP input preprocessing: scale into (0, 1), then logit.

    p = a · x / L + (1 − a) / 2        (x ∈ [0, L] ↦ p ∈ [(1−a)/2, (1+a)/2])
    y = logit(p)

with ``L`` the number of levels per dimension (256 for uint8 data) and ``a``
the squeeze factor (official: 0.9, so p ∈ [0.05, 0.95]). Its log-det,

    log|dy/dx| = log(a / L) − log p − log(1 − p),

contains the ``log(1/L)`` that turns a density over [0, L)^D into bits per
dimension of the discrete data. Elementwise (``forward_min_event_ndims=0``).
The forward pass evaluates ``logit p = log(a·x + c) − log(a·(L − x) + c)``
with ``c = (1 − a)·L/2``, so ``1 − p`` never suffers cancellation near the top
of the range; the inverse, ``x = (σ(y) − (1 − a)/2) · L / a``, uses
log-sigmoids for its log-det and is finite for every finite ``y``.

Support: the preimage of R is ``(−c/a, L + c/a)``, slightly larger than
[0, L] when a < 1, so a flow density over it leaves a little probability
outside the dequantized range (`DiscreteImageFlow` then sums to less than
one over the discrete images; its bits/dim are conservative). With a = 1 the
support is exactly (0, L) and the discrete model is exactly normalised —
use float64 then, since float32 cannot represent x + u just below L.
"""

import math

import tensorflow as tf
import tensorflow_probability as tfp

tfb = tfp.bijectors

__all__ = ['LogitPreprocess']


class LogitPreprocess(tfb.Bijector):
  """``x ∈ [0, L] ↦ logit(a·x/L + (1−a)/2)``."""

  def __init__(self,
               num_levels=256,
               alpha=0.9,
               validate_args=False,
               name='logit_preprocess'):
    parameters = dict(locals())
    if not 0. < alpha <= 1.:
      raise ValueError(f'alpha must be in (0, 1], got {alpha}.')
    if num_levels < 2:
      raise ValueError(f'num_levels must be at least 2, got {num_levels}.')
    self._num_levels = int(num_levels)
    self._alpha = float(alpha)
    with tf.name_scope(name) as name:
      super().__init__(
          forward_min_event_ndims=0,
          validate_args=validate_args,
          parameters=parameters,
          name=name)

  @property
  def num_levels(self):
    return self._num_levels

  @property
  def alpha(self):
    return self._alpha

  def _scale(self, dtype):
    return tf.constant(self._alpha / self._num_levels, dtype)

  def _offset(self, dtype):
    return tf.constant((1. - self._alpha) / 2., dtype)

  def _log_p_and_log_one_minus_p(self, x):
    # p = (a·x + c)/L and 1 − p = (a·(L − x) + c)/L with c = (1 − a)·L/2.
    a = tf.constant(self._alpha, x.dtype)
    c = tf.constant((1. - self._alpha) * self._num_levels / 2., x.dtype)
    levels = tf.constant(self._num_levels, x.dtype)
    log_levels = tf.math.log(levels)
    return (tf.math.log(a * x + c) - log_levels,
            tf.math.log(a * (levels - x) + c) - log_levels)

  def _forward(self, x):
    log_p, log_one_minus_p = self._log_p_and_log_one_minus_p(x)
    return log_p - log_one_minus_p

  def _inverse(self, y):
    return (tf.sigmoid(y) - self._offset(y.dtype)) / self._scale(y.dtype)

  def _forward_log_det_jacobian(self, x):
    log_p, log_one_minus_p = self._log_p_and_log_one_minus_p(x)
    return math.log(self._alpha / self._num_levels) - log_p - log_one_minus_p

  def _inverse_log_det_jacobian(self, y):
    return (math.log(self._num_levels / self._alpha) + tf.math.log_sigmoid(y) +
            tf.math.log_sigmoid(-y))
