"""The fused elementwise kernels compute what TensorFlow's ops compute.

`fused_elementwise.concat_elu` and `gated_residual` against the plain
formulas (`layers._concat_elu`, ``x + layers._gate(h)``) in float64 as the
reference: float32 to a few ulps, bfloat16 within the rounding of its
output (the kernels round once, the TF path after every op); gradients
likewise. Channel counts that are not a multiple of the 16-lane vectors,
empty and rank-1 tensors; shape errors; where the kernels are used
(bfloat16 networks, not in portable graphs, not when turned off).
"""

import numpy as np
import pytest
import tensorflow as tf

from tfp_flowpp.networks import blocks
from tfp_flowpp.networks import fused_elementwise
from tfp_flowpp.networks import kernel_library
from tfp_flowpp.networks import layers


def _reference_concat_elu(x):
  return tf.nn.elu(tf.concat([x, -x], axis=-1))


def _reference_gated_residual(x, h):
  a, b = tf.split(h, 2, axis=-1)
  return x + a * tf.sigmoid(b)


# Channels: one vector, a ragged tail, less than a vector, several vectors.
SHAPES = [(2, 3, 3, 16), (4, 5, 37), (3, 5), (2, 2, 2, 96), (7,)]


def _values_and_gradients(fn, inputs, cotangent):
  with tf.GradientTape() as tape:
    tape.watch(inputs)
    out = fn(*inputs)
    loss = tf.reduce_sum(tf.cast(out, tf.float64) * cotangent)
  grads = tape.gradient(loss, inputs)
  return (tf.cast(out, tf.float64).numpy(),
          [tf.cast(g, tf.float64).numpy() for g in grads])


def _inputs(shape, seed):
  rng = np.random.default_rng(seed)
  wide = shape[:-1] + (2 * shape[-1],)
  # Values around 0 as well as large ones (e^x − 1 near 0, saturated gates).
  x = 3. * rng.standard_normal(shape)
  x.flat[::7] *= 1e-4
  h = 4. * rng.standard_normal(wide)
  h.flat[::5] *= 8.
  return x, h, rng.standard_normal(wide), rng.standard_normal(shape)


@pytest.mark.parametrize('shape', SHAPES)
@pytest.mark.parametrize('dtype,rtol,atol', [(tf.float32, 2e-6, 1e-6),
                                             (tf.bfloat16, 1e-2, 1e-2)])
def test_concat_elu_matches_the_formula(shape, dtype, rtol, atol):
  x, _, cotangent, _ = _inputs(shape, 0)
  want, (want_dx,) = _values_and_gradients(_reference_concat_elu,
                                           [tf.constant(x)], cotangent)
  got, (got_dx,) = _values_and_gradients(fused_elementwise.concat_elu,
                                         [tf.constant(x, dtype)], cotangent)
  if dtype == tf.bfloat16:  # The reference at the bfloat16 inputs.
    xb = tf.cast(tf.cast(x, dtype), tf.float64)
    want, (want_dx,) = _values_and_gradients(_reference_concat_elu, [xb],
                                             cotangent)
    # One rounding of the exact value: half a bfloat16 ulp (2⁻⁹ relative).
    np.testing.assert_allclose(got, want, rtol=2.**-8, atol=0)
  np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)
  np.testing.assert_allclose(got_dx, want_dx, rtol=rtol, atol=atol)


@pytest.mark.parametrize('shape', SHAPES)
@pytest.mark.parametrize('dtype,rtol,atol', [(tf.float32, 2e-6, 2e-6),
                                             (tf.bfloat16, 1e-2, 3e-2)])
def test_gated_residual_matches_the_formula(shape, dtype, rtol, atol):
  x, h, _, cotangent = _inputs(shape, 1)
  if dtype == tf.bfloat16:
    x, h = (tf.cast(tf.cast(t, dtype), tf.float64).numpy() for t in (x, h))
  want, want_grads = _values_and_gradients(
      _reference_gated_residual, [tf.constant(x), tf.constant(h)], cotangent)
  got, got_grads = _values_and_gradients(
      fused_elementwise.gated_residual,
      [tf.constant(x, dtype), tf.constant(h, dtype)], cotangent)
  np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)
  for g, w in zip(got_grads, want_grads):
    np.testing.assert_allclose(g, w, rtol=rtol, atol=atol)


def test_bfloat16_results_equal_the_float32_round_trip():
  # What the TensorFlow path of a bfloat16 network computes (float32
  # between two casts), bit for bit but for rare ties of the rounding.
  x, h, _, _ = _inputs((16, 8, 8, 48), 2)
  xb, hb = tf.constant(x, tf.bfloat16), tf.constant(h, tf.bfloat16)
  to32 = lambda t: tf.cast(t, tf.float32)
  want = tf.cast(_reference_concat_elu(to32(xb)), tf.bfloat16).numpy()
  got = fused_elementwise.concat_elu(xb).numpy()
  # Away from 0, where TF's exp(x) − 1 cancels (the kernel's e^x − 1 does
  # not: the float64 comparison above covers it).
  away = np.tile(np.abs(x) > 1e-2, 2)
  assert np.mean(got[away] != want[away]) < 1e-4
  # The TF path rounds a·σ(b) before adding x: up to 1 ulp apart, rarely.
  want = tf.cast(_reference_gated_residual(to32(xb), to32(hb)),
                 tf.bfloat16).numpy()
  got = fused_elementwise.gated_residual(xb, hb).numpy()
  assert np.mean(got != want) < 1e-3


def test_empty_tensors_and_nan():
  empty = tf.zeros([0, 4], tf.bfloat16)
  assert fused_elementwise.concat_elu(empty).shape == [0, 8]
  assert fused_elementwise.gated_residual(
      empty, tf.zeros([0, 8], tf.bfloat16)).shape == [0, 4]
  # NaN propagates (the trainer's non-finite guard must see it).
  nan = tf.constant([[np.nan, 1.]], tf.bfloat16)
  y = tf.cast(fused_elementwise.concat_elu(nan), tf.float32).numpy()
  np.testing.assert_array_equal(np.isnan(y), [[True, False, True, False]])
  y = fused_elementwise.gated_residual(
      tf.constant([[1., 1.]]), tf.constant([[1., 1., np.nan, 2.]])).numpy()
  np.testing.assert_array_equal(np.isnan(y), [[True, False]])


def test_shape_mismatch_is_an_error():
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match=r'h must have shape \[2,6\]'):
    fused_elementwise.gated_residual(tf.zeros([2, 3]), tf.zeros([2, 5]))
  with pytest.raises(tf.errors.InvalidArgumentError, match='channel axis'):
    fused_elementwise.concat_elu(tf.zeros([]))


def _op_types(fn, *args):
  graph = tf.function(fn).get_concrete_function(*args).graph
  return {op.type for op in graph.get_operations()}


def test_a_bfloat16_block_uses_the_kernels_and_computes_the_same(monkeypatch):
  block = blocks.GatedConvBlock(16, rng=np.random.default_rng(0))
  x = tf.cast(tf.random.stateless_normal([2, 4, 4, 16], seed=[1, 2]),
              tf.bfloat16)
  fused_ops = {'FlowppConcatElu', 'FlowppGatedResidual'}
  assert fused_ops <= _op_types(block, x)
  assert not fused_ops & _op_types(block, tf.cast(x, tf.float32))
  with kernel_library.portable_graphs():
    assert not fused_ops & _op_types(block, tf.zeros([1, 4, 4, 16],
                                                     tf.bfloat16))
  ones = np.ones(x.shape)
  fused, (grad_fused,) = _values_and_gradients(block, [x], ones)
  assert fused_elementwise.describe(tf.bfloat16) == 'fused CPU kernels'
  monkeypatch.setenv('TFP_FLOWPP_FUSED_ELEMENTWISE', '0')
  assert not fused_elementwise.applies(tf.bfloat16)
  assert fused_elementwise.describe(tf.bfloat16) == (
      'TensorFlow ops (TFP_FLOWPP_FUSED_ELEMENTWISE=0)')
  assert not fused_ops & _op_types(block, tf.zeros([3, 4, 4, 16],
                                                   tf.bfloat16))
  plain, (grad_plain,) = _values_and_gradients(block, [x], ones)
  # Same function; bfloat16 roundings in different places.
  np.testing.assert_allclose(fused, plain, atol=0.05)
  np.testing.assert_allclose(grad_fused, grad_plain, atol=0.05)
  assert layers.concat_elu(x).dtype == tf.bfloat16
