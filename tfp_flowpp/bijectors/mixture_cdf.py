"""Log-space mixture-of-logistics CDF and its inverse (Flow++, Ho et al. 2019, §3.2).

For a K-component mixture with log-weights ``log π`` (``logits`` after
``log_softmax``), means ``μ`` and log-scales ``log s`` the elementwise CDF is

    F(x) = Σ_k π_k σ((x − μ_k) / s_k).

The Flow++ coupling needs ``logit(F(x))`` and ``d/dx logit(F(x))``. Both are
computed here purely from log-sigmoids and softplus terms,

    log F(x)     = logsumexp_k(log π_k − softplus(−z_k))
    log (1−F(x)) = logsumexp_k(log π_k − softplus(z_k))
    log f(x)     = logsumexp_k(log π_k − log s_k − softplus(z_k) − softplus(−z_k))
    logit F(x)   = log F(x) − log(1 − F(x))
    log |d logit F / dx| = log f − log F − log(1 − F)

with ``z_k = (x − μ_k) / s_k``, so they stay finite for every finite ``x``: the
official code computes ``log(1/F − 1)`` from ``F`` itself, which rounds to
±inf in float32 once ``|logit F|`` exceeds ~17.

The inverse solves ``logit F(x) = t``. Since ``F`` is a convex combination of
logistic CDFs, ``min_k z_k ≤ logit F(x) ≤ max_k z_k``, hence the root lies in
the exact, cheap bracket

    [min_k(μ_k + s_k t), max_k(μ_k + s_k t)],

which we hand to TFP's vectorised Chandrupatla root finder. The official
fixed-step bisection (bounds μ ∓ 200·Σ s, up to 200 halvings until
max |Δx| < 1e-12) is the benchmarks' baseline, in bench/_mixture_bisection.py.
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

  Args:
    x: float `Tensor` of shape `S`.
    log_weights: `Tensor` of shape `S + [K]`, normalised (``log_softmax``).
    means: `Tensor` of shape `S + [K]`.
    log_scales: `Tensor` of shape `S + [K]` (already clamped by the caller).

  Returns:
    `MixtureLogisticTerms` with both fields of shape `S`.
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
  """``logit F(x)`` alone (the objective of the inverse)."""
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
