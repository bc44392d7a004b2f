"""The official Flow++ inverse of the mixture-of-logistics CDF: bisection.

The benchmarks' baseline for the library's Chandrupatla inverse
(`tfp_flowpp.bijectors.mixture_cdf.invert_mixture_logistic_logit_cdf`); not
part of the library, which never bisects.
"""

import tensorflow as tf

from tfp_flowpp.bijectors import mixture_cdf

__all__ = ['bisection_invert_mixture_logistic_logit_cdf']


def bisection_invert_mixture_logistic_logit_cdf(target,
                                                log_weights,
                                                means,
                                                log_scales,
                                                tolerance=1e-12,
                                                max_iterations=200,
                                                bounds_scale=200.):
  """The official code's fixed bisection, on the same logit-space objective.

  Bounds ``min μ − 200 Σ s`` and ``max μ + 200 Σ s``; halves until the largest
  update is below ``tolerance`` or ``max_iterations`` steps. Kept as the
  baseline the benchmarks compare Chandrupatla against.
  """
  target = tf.stop_gradient(target)
  sum_scales = tf.reduce_sum(tf.exp(log_scales), axis=-1, keepdims=True)
  low = tf.reduce_min(means - bounds_scale * sum_scales, axis=-1)
  high = tf.reduce_max(means + bounds_scale * sum_scales, axis=-1)
  x0 = tf.zeros_like(target)

  def body(i, x, low, high, _):
    too_high = mixture_cdf.mixture_logistic_logit_cdf(x, log_weights, means,
                                                      log_scales) > target
    new_x = tf.where(too_high, (x + low) / 2, (x + high) / 2)
    new_low = tf.where(too_high, low, x)
    new_high = tf.where(too_high, x, high)
    return i + 1, new_x, new_low, new_high, tf.reduce_max(tf.abs(new_x - x))

  def cond(i, x, low, high, diff):
    del x, low, high
    return tf.logical_and(i < max_iterations, diff > tolerance)

  iterations, x, _, _, _ = tf.while_loop(
      cond, body,
      (tf.constant(0), x0, low, high, tf.constant(float('inf'), target.dtype)))
  return mixture_cdf.InversionResult(x=x, num_iterations=iterations)
