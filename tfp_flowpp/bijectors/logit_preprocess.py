"""Flow++/RealNVP input preprocessing: scale into (0, 1), then logit.

See `LogitPreprocess` for the map, its log-det and its support.
"""

import math

import tensorflow as tf
import tensorflow_probability as tfp

tfb = tfp.bijectors

__all__ = ['LogitPreprocess']


class LogitPreprocess(tfb.Bijector):
  """``x ∈ [0, L] ↦ logit(a·x/L + (1−a)/2)``.

  The input preprocessing of RealNVP [(Dinh et al., 2017)][1] and Flow++
  [(Ho et al., 2019)][2]: dequantized pixels ``x ∈ [0, L]`` (``L`` levels per
  dimension, 256 for 8-bit data) are squeezed into ``[(1−a)/2, (1+a)/2]``
  and mapped to R by a logit, elementwise (``forward_min_event_ndims=0``):

  ```none
  forward:  p = a · x / L + (1 − a) / 2,    y = logit(p) = log p − log(1 − p)
  inverse:  x = (sigmoid(y) − (1 − a) / 2) · L / a
  log|dy/dx| = log(a / L) − log p − log(1 − p)
  log|dx/dy| = log(L / a) + log sigmoid(y) + log sigmoid(−y)
  ```

  with the squeeze factor ``a = alpha`` (official: 0.9, so p ∈ [0.05,
  0.95]). The log-det contains the ``log(1/L)`` per dimension that turns a
  density over [0, L)^D into probabilities (bits per dimension) of the
  discrete data.

  Numerics: the forward pass evaluates
  ``logit p = log(a·x + c) − log(a·(L − x) + c)`` with ``c = (1 − a)·L/2``,
  so ``1 − p`` never suffers cancellation near the top of the range; the
  inverse uses log-sigmoids for its log-det and is finite for every finite
  ``y``.

  Support: the preimage of R is ``(−c/a, L + c/a)``, slightly larger than
  [0, L] when a < 1, so a flow density over it leaves a little probability
  outside the dequantized range (`DiscreteImageFlow` then sums to less than
  one over the discrete images; its bits/dim are conservative). With a = 1
  the support is exactly (0, L) and the discrete model is exactly
  normalised -- use float64 then, since float32 cannot represent x + u just
  below L.

  #### Examples

  >>> import numpy as np
  >>> import tensorflow as tf
  >>> from tfp_flowpp import bijectors as fb
  >>> preprocess = fb.LogitPreprocess(num_levels=256, alpha=0.9)
  >>> print(np.round(preprocess.forward([0., 128., 256.]).numpy(), 4))
  [-2.9444  0.      2.9444]
  >>> x = tf.constant([0.5, 100., 255.5])
  >>> with tf.GradientTape() as tape:
  ...   tape.watch(x)
  ...   y = preprocess.forward(x)
  >>> np.allclose(preprocess.forward_log_det_jacobian(x, event_ndims=0),
  ...             np.log(tape.gradient(y, x)), atol=1e-5)
  True
  >>> np.allclose(preprocess.inverse(tf.identity(y)), x, rtol=1e-5)
  True

  #### References

  [1]: Laurent Dinh, Jascha Sohl-Dickstein and Samy Bengio. Density
       Estimation using Real NVP. In _International Conference on Learning
       Representations_, 2017. https://arxiv.org/abs/1605.08803

  [2]: Jonathan Ho, Xi Chen, Aravind Srinivas, Yan Duan and Pieter Abbeel.
       Flow++: Improving Flow-Based Generative Models with Variational
       Dequantization and Architecture Design. In _International Conference
       on Machine Learning_, 2019. https://arxiv.org/abs/1902.00275
  """

  def __init__(self,
               num_levels=256,
               alpha=0.9,
               validate_args=False,
               name='logit_preprocess'):
    """Creates the bijector.

    Args:
      num_levels: ``L``, discrete values per dimension (at least 2).
      alpha: squeeze factor ``a`` in (0, 1]; 1 makes the support exactly
        (0, L).
      validate_args: Python `bool`, passed to `tfb.Bijector`.
      name: bijector name.

    Raises:
      ValueError: for ``alpha`` outside (0, 1] or ``num_levels < 2``.
    """
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
