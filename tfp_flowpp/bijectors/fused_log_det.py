"""A bijector base that computes its transform and log-det in one pass.

TFP asks a bijector for ``inverse(y)`` and ``inverse_log_det_jacobian(y)`` in
two separate calls. For a coupling layer both need the same network output,
so a straightforward implementation runs the network twice per
``log_prob``. Subclasses of `FusedLogDetBijector` implement only

    _transform_and_log_det(x, **kwargs)          -> (y, fldj)
    _inverse_transform_and_log_det(y, **kwargs)  -> (x, ildj)

and the log-det is stored in TFP's bijector cache as a *greedy attribute*
(`cache_util.BijectorCacheWithGreedyAttrs`, the mechanism `tfb.FFJORD` uses).
A later ``*_log_det_jacobian`` call on the same tensor is then a cache hit.
Log-dets are returned already summed over the (H, W, C) event, so
``forward_min_event_ndims`` is 3.
"""

import tensorflow as tf
import tensorflow_probability as tfp
from tensorflow_probability.python.internal import cache_util

tfb = tfp.bijectors

__all__ = ['FusedLogDetBijector', 'sum_event']


def sum_event(x):
  """Sums the trailing (H, W, C) event dimensions."""
  return tf.reduce_sum(x, axis=[-3, -2, -1])


class FusedLogDetBijector(tfb.Bijector):
  """Bijector whose subclasses return (output, log-det) together."""

  _cache = cache_util.BijectorCacheWithGreedyAttrs(
      forward_name='_augmented_forward', inverse_name='_augmented_inverse')

  def __init__(self, validate_args=False, parameters=None, name=None):
    super().__init__(
        forward_min_event_ndims=3,
        validate_args=validate_args,
        parameters=parameters,
        name=name)

  def _augmented_forward(self, x, **kwargs):
    y, fldj = self._transform_and_log_det(x, **kwargs)
    return y, {'ildj': -fldj}

  def _augmented_inverse(self, y, **kwargs):
    x, ildj = self._inverse_transform_and_log_det(y, **kwargs)
    return x, {'ildj': ildj}

  def _forward(self, x, **kwargs):
    return self._transform_and_log_det(x, **kwargs)[0]

  def _inverse(self, y, **kwargs):
    return self._inverse_transform_and_log_det(y, **kwargs)[0]

  def _forward_log_det_jacobian(self, x, **kwargs):
    return self._transform_and_log_det(x, **kwargs)[1]

  def _inverse_log_det_jacobian(self, y, **kwargs):
    return self._inverse_transform_and_log_det(y, **kwargs)[1]

  def _transform_and_log_det(self, x, **kwargs):
    raise NotImplementedError

  def _inverse_transform_and_log_det(self, y, **kwargs):
    raise NotImplementedError
