"""A bijector base that computes its transform and log-det in one pass.

Subclasses return ``(output, log-det)`` together and TFP's bijector cache
keeps the log-det, so a coupling network runs once per direction per input;
see `FusedLogDetBijector`.
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
  """Bijector whose subclasses return (output, log-det) together.

  TFP asks a bijector for ``inverse(y)`` and ``inverse_log_det_jacobian(y)``
  in two separate calls. For a coupling layer both need the same network
  output, so a straightforward implementation runs the network twice per
  ``log_prob``. Subclasses of `FusedLogDetBijector` implement only

  ```none
  _transform_and_log_det(x, **kwargs)          -> (y, log|det ∂y/∂x|)
  _inverse_transform_and_log_det(y, **kwargs)  -> (x, log|det ∂x/∂y|)
  ```

  with the log-dets already summed over the ``(H, W, C)`` event (shape =
  batch shape; ``forward_min_event_ndims = 3``). Each pass stores its
  log-det in TFP's bijector cache as a *greedy attribute*
  (`cache_util.BijectorCacheWithGreedyAttrs`, the mechanism `tfb.FFJORD`
  uses), so a later ``*_log_det_jacobian`` call on the same tensor -- or on
  the output of the pass, in the other direction -- is a cache hit. Keyword
  arguments (conditioning) reach both methods unchanged.

  #### Examples

  A bijector ``y = 2x`` on ``[2, 2, 2]`` events whose log-det,
  ``8 log 2``, comes with the transform; each direction runs once:

  >>> import math
  >>> import numpy as np
  >>> import tensorflow as tf
  >>> from tfp_flowpp import bijectors as fb
  >>> class Double(fb.FusedLogDetBijector):
  ...   calls = 0
  ...   def _transform_and_log_det(self, x):
  ...     Double.calls += 1
  ...     return 2. * x, tf.fill(tf.shape(x)[:-3], 8 * math.log(2.))
  ...   def _inverse_transform_and_log_det(self, y):
  ...     Double.calls += 1
  ...     return y / 2., tf.fill(tf.shape(y)[:-3], -8 * math.log(2.))
  >>> double = Double(name='double')
  >>> y = tf.fill([3, 2, 2, 2], 4.)
  >>> x = double.inverse(y)
  >>> ildj = double.inverse_log_det_jacobian(y, event_ndims=3)  # Cached.
  >>> fldj = double.forward_log_det_jacobian(x, event_ndims=3)  # Cached.
  >>> Double.calls
  1
  >>> np.allclose(ildj, -8 * math.log(2.)), np.allclose(fldj, -ildj)
  (True, True)

  #### References

  [1]: Will Grathwohl, Ricky T. Q. Chen, Jesse Bettencourt, Ilya Sutskever
       and David Duvenaud. FFJORD: Free-form Continuous Dynamics for
       Scalable Reversible Generative Models. In _International Conference
       on Learning Representations_, 2019. https://arxiv.org/abs/1810.01367
  """

  _cache = cache_util.BijectorCacheWithGreedyAttrs(
      forward_name='_augmented_forward', inverse_name='_augmented_inverse')

  def __init__(self, validate_args=False, parameters=None, name=None):
    """Creates the bijector (``forward_min_event_ndims = 3``).

    Args:
      validate_args: Python `bool`, passed to `tfb.Bijector`.
      parameters: the subclass's ``dict(locals())``.
      name: bijector name.
    """
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
