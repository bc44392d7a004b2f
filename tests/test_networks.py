"""The cache-chunked attention equals the plain formula, values and gradients.

`blocks.attention` splits the batch into groups and uses a hand-written
gradient; both must be invisible: same outputs and same gradients (w.r.t.
q, k, v) as autodiff of ``softmax(q kᵀ/√d) v`` — on the unchunked path, the
unrolled static-batch path and the `tf.map_fn` dynamic-batch path (with a
batch that does not divide into equal groups, so the padding is exercised).
"""

import math

import numpy as np
import pytest
import tensorflow as tf

from tfp_flowpp.networks import blocks


def _plain_attention(q, k, v):
  logits = tf.matmul(q, k, transpose_b=True) / math.sqrt(q.shape[-1])
  return tf.matmul(tf.nn.softmax(logits, axis=-1), v)


def _value_and_grads(fn, q, k, v, cotangent):
  with tf.GradientTape() as tape:
    tape.watch([q, k, v])
    out = fn(q, k, v)
    loss = tf.reduce_sum(out * cotangent)
  return out, tape.gradient(loss, [q, k, v])


def _inputs(batch, heads=3, steps=10, dim=4, seed=0):
  rng = np.random.default_rng(seed)
  make = lambda: tf.constant(  # pylint: disable=g-long-lambda
      3. * rng.standard_normal([batch, heads, steps, dim]), tf.float64)
  return make(), make(), make(), make()


@pytest.mark.parametrize('chunk_images,unrolled', [
    (None, None),  # Whole batch in one group.
    (2, 16),       # 7 images → groups of 2/2/2/1, unrolled.
    (2, 1),        # Same groups through tf.map_fn (with padding).
])
def test_chunked_attention_matches_plain_formula(monkeypatch, chunk_images,
                                                 unrolled):
  q, k, v, cotangent = _inputs(batch=7)
  if chunk_images is not None:
    per_image = q.shape[1] * q.shape[2] * q.shape[2] * q.dtype.size
    monkeypatch.setattr(blocks, 'ATTENTION_CHUNK_BYTES',
                        chunk_images * per_image)
    monkeypatch.setattr(blocks, 'MAX_UNROLLED_ATTENTION_CHUNKS', unrolled)
  want, want_grads = _value_and_grads(_plain_attention, q, k, v, cotangent)
  got, got_grads = _value_and_grads(blocks.attention, q, k, v, cotangent)
  np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
  for g, w, name in zip(got_grads, want_grads, 'qkv'):
    np.testing.assert_allclose(g, w, rtol=1e-9, atol=1e-11, err_msg=name)


def test_chunked_attention_with_unknown_batch_in_a_graph(monkeypatch):
  q, k, v, cotangent = _inputs(batch=5)
  per_image = q.shape[1] * q.shape[2] * q.shape[2] * q.dtype.size
  monkeypatch.setattr(blocks, 'ATTENTION_CHUNK_BYTES', 2 * per_image)
  spec = tf.TensorSpec([None] + q.shape[1:], tf.float64)

  @tf.function(input_signature=[spec] * 4)
  def run(q, k, v, cotangent):
    return _value_and_grads(blocks.attention, q, k, v, cotangent)

  got, got_grads = run(q, k, v, cotangent)
  want, want_grads = _value_and_grads(_plain_attention, q, k, v, cotangent)
  np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
  for g, w in zip(got_grads, want_grads):
    np.testing.assert_allclose(g, w, rtol=1e-9, atol=1e-11)


def test_attention_gradient_matches_finite_differences():
  """The hand-written gradient against central differences (float64)."""
  q, k, v, cotangent = _inputs(batch=1, heads=1, steps=5, dim=3, seed=1)
  _, grads = _value_and_grads(blocks.attention, q, k, v, cotangent)
  loss = lambda q, k, v: float(tf.reduce_sum(  # pylint: disable=g-long-lambda
      blocks.attention(q, k, v) * cotangent))
  eps = 1e-6
  for which, grad in enumerate(grads):
    args = [q.numpy(), k.numpy(), v.numpy()]
    numeric = np.zeros_like(args[which])
    for index in np.ndindex(*args[which].shape):
      plus = [a.copy() for a in args]
      minus = [a.copy() for a in args]
      plus[which][index] += eps
      minus[which][index] -= eps
      numeric[index] = (loss(*map(tf.constant, plus)) -
                        loss(*map(tf.constant, minus))) / (2 * eps)
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-7)
