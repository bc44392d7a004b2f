"""Log-space mixture-of-logistics CDF and its inverse (Flow++, Ho et al. 2019, §3.2).

``logit F`` of a K-component logistic mixture and its log-derivative from
softplus terms only (`mixture_logistic_terms`), and the root of
``logit F(x) = t`` on an exact bracket with TFP's Chandrupatla root finder
and implicit gradients (`invert_mixture_logistic_logit_cdf`).
The official fixed-step bisection (the benchmarks' baseline) lives in
bench/_mixture_bisection.py.
"""

import collections

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

__all__ = [
    'MixtureLogisticTerms',
    'mixture_logistic_terms',
    'mixture_logistic_logit_cdf',
    'invert_mixture_logistic_logit_cdf',
    'InversionResult',
]

MixtureLogisticTerms = collections.namedtuple('MixtureLogisticTerms',
                                              ['logit_cdf', 'log_derivative'])
"""``logit F(x)`` and ``log d(logit F)/dx``, both shaped like ``x``."""

InversionResult = collections.namedtuple('InversionResult',
                                         ['x', 'num_iterations'])


def mixture_logistic_terms(x, log_weights, means, log_scales):
  """Returns ``logit F(x)`` and ``log |d logit F(x) / dx|``.

  For a K-component mixture with log-weights ``log π`` (``logits`` after
  ``log_softmax``), means ``μ`` and log-scales ``log s``, elementwise

  ```none
  F(x) = Σ_k π_k sigmoid(z_k),   z_k = (x − μ_k) / s_k
  ```

  [(Ho et al., 2019)][1], §3.2. Both outputs are computed from softplus
  terms only,

  ```none
  log F(x)       = logsumexp_k(log π_k − softplus(−z_k))
  log(1 − F(x))  = logsumexp_k(log π_k − softplus(z_k))
  log f(x)       = logsumexp_k(log π_k − log s_k − softplus(z_k)
                               − softplus(−z_k))
  logit F(x)     = log F(x) − log(1 − F(x))
  log|d logit F / dx| = log f − log F − log(1 − F)
  ```

  so they stay finite for every finite ``x``. The official code computes
  ``logit F = −log(1/F − 1)`` from ``F = exp(log F)`` itself, which in
  float32 is +inf once ``logit F`` exceeds ~17 (F rounds to 1) and −inf once
  it is below ~−88 (F underflows).

  Args:
    x: float `Tensor` of shape `S`.
    log_weights: `Tensor` of shape `S + [K]`, normalised (``log_softmax``).
    means: `Tensor` of shape `S + [K]`.
    log_scales: `Tensor` of shape `S + [K]` (already clamped by the caller).

  Returns:
    `MixtureLogisticTerms` with both fields of shape `S`.

  #### Examples

  Far in the right tail the naive formula overflows; the log-space one
  keeps ``logit F(40) ≈ z_1 − log π_1 = 41 + 1.204``:

  >>> import numpy as np
  >>> import tensorflow as tf
  >>> from tfp_flowpp.bijectors import mixture_cdf
  >>> x = tf.constant([-3., 0.5, 40.])
  >>> log_weights = tf.math.log(tf.constant([[0.3, 0.7]] * 3))
  >>> means = tf.constant([[-1., 2.]] * 3)
  >>> log_scales = tf.constant([[0., -1.]] * 3)
  >>> with tf.GradientTape() as tape:
  ...   tape.watch(x)
  ...   terms = mixture_cdf.mixture_logistic_terms(
  ...       x, log_weights, means, log_scales)
  >>> print(np.round(terms.logit_cdf.numpy(), 3))
  [-3.294 -1.062 42.204]
  >>> cdf = tf.reduce_sum(tf.exp(log_weights) * tf.sigmoid(
  ...     (x[:, None] - means) / tf.exp(log_scales)), axis=-1)
  >>> print(np.round(-tf.math.log(1. / cdf - 1.).numpy(), 3))
  [-3.294 -1.062    inf]
  >>> np.allclose(tf.exp(terms.log_derivative),
  ...             tape.gradient(terms.logit_cdf, x))
  True

  #### References

  [1]: Jonathan Ho, Xi Chen, Aravind Srinivas, Yan Duan and Pieter Abbeel.
       Flow++: Improving Flow-Based Generative Models with Variational
       Dequantization and Architecture Design. In _International Conference
       on Machine Learning_, 2019. https://arxiv.org/abs/1902.00275
  """
  z = (x[..., tf.newaxis] - means) * tf.exp(-log_scales)
  softplus_z = tf.nn.softplus(z)
  softplus_neg_z = tf.nn.softplus(-z)
  log_cdf = tf.reduce_logsumexp(log_weights - softplus_neg_z, axis=-1)
  log_sf = tf.reduce_logsumexp(log_weights - softplus_z, axis=-1)
  log_pdf = tf.reduce_logsumexp(
      log_weights - log_scales - softplus_z - softplus_neg_z, axis=-1)
  return MixtureLogisticTerms(
      logit_cdf=log_cdf - log_sf, log_derivative=log_pdf - log_cdf - log_sf)


def mixture_logistic_logit_cdf(x, log_weights, means, log_scales):
  """``logit F(x)`` alone (the objective of the inverse).

  ``logit F(x) = log F(x) − log(1 − F(x))`` for
  ``F(x) = Σ_k π_k sigmoid((x − μ_k) / s_k)``, computed in log space as in
  `mixture_logistic_terms` (same arguments).

  #### Examples

  One standard logistic component: ``logit F`` is the identity, even where
  ``F`` itself rounds to 0 or 1:

  >>> import numpy as np
  >>> import tensorflow as tf
  >>> from tfp_flowpp.bijectors import mixture_cdf
  >>> x = tf.constant([-200., 0.5, 30.])
  >>> zeros = tf.zeros([3, 1])
  >>> logit_cdf = mixture_cdf.mixture_logistic_logit_cdf(x, zeros, zeros, zeros)
  >>> np.allclose(logit_cdf, x)
  True

  #### References

  [1]: Jonathan Ho, Xi Chen, Aravind Srinivas, Yan Duan and Pieter Abbeel.
       Flow++: Improving Flow-Based Generative Models with Variational
       Dequantization and Architecture Design. In _International Conference
       on Machine Learning_, 2019. https://arxiv.org/abs/1902.00275
  """
  return mixture_logistic_terms(x, log_weights, means, log_scales).logit_cdf


def _bracket(target, means, log_scales):
  ends = means + tf.exp(log_scales) * target[..., tf.newaxis]
  return tf.reduce_min(ends, axis=-1), tf.reduce_max(ends, axis=-1)


def _with_implicit_gradient(x_star, target, log_weights, means, log_scales):
  """Attaches implicit-function gradients to a root found without autodiff.

  ``x* = x* − (g(x*) − stop(g(x*))) / stop(g'(x*))`` with
  ``g(x) = logit F(x) − t`` has the value ``x*`` and, by the implicit function
  theorem, the exact gradient ``dx*/dθ = −(∂g/∂θ) / g'(x*)``.
  """
  x_star = tf.stop_gradient(x_star)
  terms = mixture_logistic_terms(x_star, log_weights, means, log_scales)
  residual = terms.logit_cdf - target
  slope = tf.stop_gradient(tf.exp(terms.log_derivative))
  return x_star - (residual - tf.stop_gradient(residual)) / slope


def invert_mixture_logistic_logit_cdf(target,
                                      log_weights,
                                      means,
                                      log_scales,
                                      position_tolerance=None,
                                      max_iterations=100):
  """Solves ``logit F(x) = target`` with `tfp.math.find_root_chandrupatla`.

  The inverse of the Flow++ coupling [(Ho et al., 2019)][1]. Since ``F`` is
  a convex combination of logistic CDFs,
  ``min_k z_k ≤ logit F(x) ≤ max_k z_k`` with ``z_k = (x − μ_k) / s_k``, so
  the root of ``logit F(x) = t`` lies in the exact, cheap bracket

  ```none
  [min_k(μ_k + s_k t), max_k(μ_k + s_k t)],
  ```

  which is handed to TFP's vectorised Chandrupatla root finder [2] on the
  logit-space objective, with the parameters' gradients stopped. The root
  ``x*`` then gets implicit-function gradients: with
  ``g(x) = logit F(x) − t``,

  ```none
  x = x* − (g(x*) − stop(g(x*))) / stop(g'(x*))
  ```

  has the value ``x*`` and, by the implicit function theorem, the exact
  gradient ``dx*/dθ = −(∂g/∂θ) / g'(x*)`` with respect to ``target`` and
  the mixture parameters. (The official code bisects in CDF space from
  ``μ ∓ 200·Σ s``, up to 200 halvings, without gradients.)

  Args:
    target: float `Tensor` of shape `S`.
    log_weights, means, log_scales: `Tensor`s of shape `S + [K]`.
    position_tolerance: tolerance in ``x`` relative to the root's magnitude
      (absolute below 1); defaults to two ulps of the dtype (2.4e-7 for
      float32, 4.4e-16 for float64).
    max_iterations: cap on Chandrupatla iterations.

  Returns:
    `InversionResult(x, num_iterations)`; ``x`` carries implicit gradients
    with respect to ``target`` and the mixture parameters.

  #### Examples

  Inverts the log-space ``logit F`` and differentiates through the root:
  ``dx/dt = 1 / (d logit F / dx)``.

  >>> import numpy as np
  >>> import tensorflow as tf
  >>> from tfp_flowpp.bijectors import mixture_cdf
  >>> x = tf.constant([-3., 0.5, 40.])
  >>> log_weights = tf.math.log(tf.constant([[0.3, 0.7]] * 3))
  >>> means = tf.constant([[-1., 2.]] * 3)
  >>> log_scales = tf.constant([[0., -1.]] * 3)
  >>> terms = mixture_cdf.mixture_logistic_terms(
  ...     x, log_weights, means, log_scales)
  >>> target = terms.logit_cdf
  >>> with tf.GradientTape() as tape:
  ...   tape.watch(target)
  ...   result = mixture_cdf.invert_mixture_logistic_logit_cdf(
  ...       target, log_weights, means, log_scales)
  >>> np.allclose(result.x, x)
  True
  >>> np.allclose(tape.gradient(result.x, target),
  ...             tf.exp(-terms.log_derivative))
  True

  #### References

  [1]: Jonathan Ho, Xi Chen, Aravind Srinivas, Yan Duan and Pieter Abbeel.
       Flow++: Improving Flow-Based Generative Models with Variational
       Dequantization and Architecture Design. In _International Conference
       on Machine Learning_, 2019. https://arxiv.org/abs/1902.00275

  [2]: Tirupathi R. Chandrupatla. A new hybrid quadratic/bisection
       algorithm for finding the zero of a nonlinear function without using
       derivatives. _Advances in Engineering Software_, 28(3):145-149, 1997.
       (As cited by `tfp.math.find_root_chandrupatla`.)
  """
  dtype = target.dtype
  if position_tolerance is None:
    position_tolerance = 2. * float(np.finfo(dtype.as_numpy_dtype).eps)
  stopped = [
      tf.stop_gradient(t) for t in (target, log_weights, means, log_scales)
  ]
  s_target, s_log_weights, s_means, s_log_scales = stopped
  low, high = _bracket(s_target, s_means, s_log_scales)
  # |root| ≥ min(|low|, |high|) when the bracket does not straddle zero.
  magnitude = tf.where(low * high > 0, tf.minimum(tf.abs(low), tf.abs(high)),
                       tf.zeros_like(low))
  tolerance = tf.cast(position_tolerance, dtype) * tf.maximum(
      tf.ones_like(magnitude), magnitude)

  def objective(x):
    return mixture_logistic_logit_cdf(x, s_log_weights, s_means,
                                      s_log_scales) - s_target

  result = tfp.math.find_root_chandrupatla(
      objective,
      low=low,
      high=high,
      position_tolerance=tolerance,
      value_tolerance=tf.zeros([], dtype),
      max_iterations=max_iterations)
  x = _with_implicit_gradient(result.estimated_root, target, log_weights, means,
                              log_scales)
  return InversionResult(
      x=x, num_iterations=tf.reduce_max(result.num_iterations))
