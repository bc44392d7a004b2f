"""Exactness helpers for bijector tests (TFP's bijector_test_util is not in
the wheel). Every helper breaks TFP's bijector cache with `tf.identity`
before going back, so a round trip really runs the inverse."""

import numpy as np
import tensorflow as tf


def fresh(t):
  """A new tensor object with the same value (defeats the bijector cache)."""
  return tf.identity(t)


def round_trip_errors(bijector, x, **kwargs):
  """Returns max |f⁻¹(f(x)) − x| and max |f(f⁻¹(y)) − y| with y = f(x)."""
  y = bijector.forward(x, **kwargs)
  x_back = bijector.inverse(fresh(y), **kwargs)
  y_back = bijector.forward(
      fresh(bijector.inverse(fresh(y), **kwargs)), **kwargs)
  return (float(tf.reduce_max(tf.abs(x_back - x))),
          float(tf.reduce_max(tf.abs(y_back - y))))


def brute_force_log_det(fn, x):
  """log|det ∂fn(x)/∂x| per batch element via batch_jacobian + slogdet.

  ``fn`` maps ``[B, ...]`` to ``[B, ...]`` with the same number of elements.
  Computed in the dtype of ``x`` (use float64).
  """
  batch = int(x.shape[0])
  with tf.GradientTape() as tape:
    tape.watch(x)
    y = tf.reshape(fn(x), [batch, -1])
  jac = tape.batch_jacobian(y, x)
  jac = tf.reshape(jac, [batch, y.shape[1], -1]).numpy()
  sign, logdet = np.linalg.slogdet(jac)
  assert np.all(sign != 0), 'Jacobian is singular'
  return logdet


def perturb(module, scale, seed=0):
  """Adds N(0, scale²) noise to every trainable variable of ``module``."""
  rng = np.random.default_rng(seed)
  for v in module.trainable_variables:
    v.assign_add(tf.constant(rng.normal(0., scale, v.shape), v.dtype))


def relative_error(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.max(np.abs(a - b) / np.maximum(1., np.abs(b))))
