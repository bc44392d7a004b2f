"""The fused CPU attention kernel computes what TensorFlow's ops compute.

Values and gradients of `fused_attention.self_attention` against
`blocks.attention` (autodiff of the plain formula is checked against that
one in test_networks.py) in float64 (to rounding), float32 and the 16-bit
dtypes (against a float64 reference, within the output rounding); the
attention block and a whole model give the same bound and gradients with
either kernel; XLA clusters and SavedModel graphs never hold the custom op;
a machine without a compiler falls back (auto) or says why (fused).
"""

import os
import stat

import numpy as np
import pytest
import tensorflow as tf

from tfp_flowpp import model_builder
from tfp_flowpp.compression.float64_model import float64_model
from tfp_flowpp.networks import blocks
from tfp_flowpp.networks import fused_attention
from tfp_flowpp.networks import kernel_library

import configs_util
import flow_test_util


def _reference(qkv, heads):
  """TensorFlow's ops on the heads of qkv: [B, N, 3F] -> [B, N, F]."""
  batch, steps, channels = qkv.shape
  features = channels // 3
  x = tf.reshape(qkv, [batch, steps, 3, heads, features // heads])
  q, k, v = tf.unstack(tf.transpose(x, [2, 0, 3, 1, 4]), axis=0)
  return tf.reshape(
      tf.transpose(blocks.attention(q, k, v), [0, 2, 1, 3]),
      [batch, steps, features])


def _value_and_gradient(fn, qkv, cotangent, heads):
  with tf.GradientTape() as tape:
    tape.watch(qkv)
    out = fn(qkv, heads)
    loss = tf.reduce_sum(tf.cast(out, tf.float64) * cotangent)
  return (tf.cast(out, tf.float64).numpy(),
          tf.cast(tape.gradient(loss, qkv), tf.float64).numpy())


def _inputs(batch, steps, features, dtype, seed=0):
  rng = np.random.default_rng(seed)
  qkv = tf.constant(2. * rng.standard_normal([batch, steps, 3 * features]))
  cotangent = tf.constant(rng.standard_normal([batch, steps, features]))
  return tf.cast(qkv, dtype), cotangent


# (batch, positions, features, heads): one block of query rows, several
# blocks with a ragged last one (the kernel's blocks hold 128 KiB of logits:
# 48 float64 rows at N = 300, 24 in the gradient), one head, N = 1.
SHAPES = [(2, 7, 8, 2), (3, 300, 12, 3), (1, 50, 6, 1), (2, 1, 4, 2)]


@pytest.mark.parametrize('shape', SHAPES)
def test_float64_equals_tensorflow_ops(shape):
  batch, steps, features, heads = shape
  qkv, cotangent = _inputs(batch, steps, features, tf.float64)
  want, want_grad = _value_and_gradient(_reference, qkv, cotangent, heads)
  got, got_grad = _value_and_gradient(fused_attention.self_attention, qkv,
                                      cotangent, heads)
  np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
  np.testing.assert_allclose(got_grad, want_grad, rtol=1e-10, atol=1e-11)


@pytest.mark.parametrize('dtype,tolerance', [
    (tf.float32, 2e-6),  # float32 accumulation on either path.
    (tf.bfloat16, 2**-8),  # Output rounding: 8 significant bits.
    (tf.float16, 2**-11),  # Output rounding: 11 significant bits.
])
def test_low_precision_within_output_rounding(dtype, tolerance):
  qkv, cotangent = _inputs(2, 300, 12, dtype, seed=1)
  exact = tf.cast(qkv, tf.float64)
  want, want_grad = _value_and_gradient(_reference, exact, cotangent, 3)
  got, got_grad = _value_and_gradient(fused_attention.self_attention, qkv,
                                      cotangent, 3)
  # Attention outputs are convex combinations of v (|v| <= ~8 here), so
  # absolute errors scale with max |v|; gradients with max |gradient|.
  scale = np.abs(want).max()
  assert np.abs(got - want).max() <= tolerance * scale
  grad_scale = np.abs(want_grad).max()
  assert np.abs(got_grad - want_grad).max() <= 4 * tolerance * grad_scale


def test_bad_layout_is_an_error():
  with pytest.raises(tf.errors.InvalidArgumentError, match='3 \\* heads'):
    fused_attention.self_attention(tf.zeros([1, 4, 3 * 6]), heads=4)
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match='head dimension 65 exceeds'):
    fused_attention.self_attention(tf.zeros([1, 4, 3 * 65]), heads=1)


def test_where_the_kernel_applies():
  # auto: 16-bit networks only (float32 and float64 keep TensorFlow's ops).
  for dtype in (tf.bfloat16, tf.float16):
    assert fused_attention.uses_fused_kernel('auto', dtype, 12)
  for dtype in (tf.float32, tf.float64):
    assert not fused_attention.uses_fused_kernel('auto', dtype, 12)
    assert fused_attention.uses_fused_kernel('fused', dtype, 12)
  assert fused_attention.uses_fused_kernel('fused', tf.float32, 64)
  assert not fused_attention.uses_fused_kernel('fused', tf.float32, 65)
  assert not fused_attention.uses_fused_kernel('fused', tf.float64, 33)
  assert not fused_attention.uses_fused_kernel('fused', tf.float32, 8,
                                               portable=True)
  assert not fused_attention.uses_fused_kernel('tensorflow', tf.float32, 8)
  with pytest.raises(ValueError, match="attention_kernel must be one of"):
    fused_attention.uses_fused_kernel('cuda', tf.float32, 8)
  wide = blocks.GatedAttentionBlock(65, heads=1, kernel='fused')
  x = tf.ones([1, 2, 2, 65])
  graph = tf.function(lambda x: wide(x, tf.zeros([2, 2, 65]))
                     ).get_concrete_function(x).graph
  assert 'FlowppSelfAttention' not in {op.type for op in graph.get_operations()}


def _block(kernel):
  return blocks.GatedAttentionBlock(
      8, heads=2, kernel=kernel, rng=np.random.default_rng(3))


def test_attention_block_is_the_same_with_either_kernel():
  fused, plain = _block('fused'), _block('tensorflow')
  x = tf.random.stateless_normal([3, 5, 4, 8], seed=[1, 2])
  position = tf.random.stateless_normal([5, 4, 8], seed=[3, 4])
  results = []
  for block in (fused, plain):

    @tf.function
    def step(x, block=block):
      with tf.GradientTape() as tape:
        y = block(x, position)
        loss = tf.reduce_sum(y * y)
      return y, tape.gradient(loss, block.trainable_variables)

    results.append(step(x))
    ops = {op.type for op in step.get_concrete_function(x).graph
           .get_operations()}
    assert ('FlowppSelfAttention' in ops) == (block is fused), ops
  (y_fused, g_fused), (y_plain, g_plain) = results
  np.testing.assert_allclose(y_fused, y_plain, rtol=1e-5, atol=1e-6)
  for a, b in zip(g_fused, g_plain):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_xla_and_portable_graphs_use_tensorflow_ops():
  block = _block('fused')
  x = tf.random.stateless_normal([2, 3, 4, 8], seed=[1, 2])
  position = tf.zeros([3, 4, 8])
  compiled = tf.function(lambda x: block(x, position), jit_compile=True)
  np.testing.assert_allclose(compiled(x), block(x, position), atol=1e-5)

  @tf.function
  def portable(x):
    with blocks.portable_attention():
      return block(x, position)

  ops = {op.type for op in portable.get_concrete_function(x).graph
         .get_operations()}
  assert 'FlowppSelfAttention' not in ops


def test_model_bound_and_gradients_agree_across_kernels():
  images = tf.constant(
      np.random.default_rng(0).integers(0, 17, size=(6, 4, 4, 1)), tf.uint8)
  outputs, reference = [], None
  for kernel in ('fused', 'tensorflow'):
    config = configs_util.tiny_model_config(attention_kernel=kernel)
    model = model_builder.build_model(config)
    model.initialize(images, seed=[1, 2])
    if reference is None:
      flow_test_util.perturb(model, 0.05)  # So the networks matter.
      reference = model
    else:
      for a, b in zip(reference.variables, model.variables):
        b.assign(a)
    with tf.GradientTape() as tape:
      bound = model.log_prob(images, seed=[4, 5], training=True)
      total = tf.reduce_sum(bound)
    outputs.append(
        (bound.numpy(), tape.gradient(total, model.trainable_variables)))
  (bound_fused, grads_fused), (bound_plain, grads_plain) = outputs
  np.testing.assert_allclose(bound_fused, bound_plain, rtol=1e-5)
  assert [g is None for g in grads_fused] == [g is None for g in grads_plain]
  compared = [(a, b) for a, b in zip(grads_fused, grads_plain) if a is not None]
  assert len(compared) == len(grads_fused)
  for a, b in compared:
    np.testing.assert_allclose(a, b, rtol=2e-3, atol=2e-4)


@pytest.fixture
def fresh_build(monkeypatch, tmp_path):
  """An empty kernel cache and a forgotten library (restored afterwards)."""
  monkeypatch.setenv('TFP_FLOWPP_KERNEL_CACHE', str(tmp_path / 'cache'))
  kernel_library.load.cache_clear()
  yield tmp_path
  kernel_library.load.cache_clear()


def test_without_a_compiler_auto_falls_back_and_fused_says_why(
    fresh_build, monkeypatch):
  monkeypatch.setenv('CXX', 'no-such-compiler')
  assert not fused_attention.uses_fused_kernel('auto', tf.bfloat16)
  assert fused_attention.describe('auto', tf.bfloat16) == (
      "TensorFlow ops (auto: no C++ compiler 'no-such-compiler' on PATH to "
      'build the fused CPU kernels (install g++ or set CXX))')
  with pytest.raises(fused_attention.KernelUnavailableError,
                     match="no C\\+\\+ compiler 'no-such-compiler'"):
    fused_attention.uses_fused_kernel('fused', tf.float32)
  block = _block('auto')  # Still runs, on TensorFlow's ops.
  x = tf.ones([1, 2, 2, 8], tf.bfloat16)
  assert block(x, tf.zeros([2, 2, 8])).shape == [1, 2, 2, 8]
  assert not (fresh_build / 'cache').exists()


def test_failed_compilation_is_one_line_leaves_no_library_and_is_not_repeated(
    fresh_build, monkeypatch):
  compiler = fresh_build / 'broken-g++'
  calls = fresh_build / 'calls'
  compiler.write_text('#!/bin/sh\n[ "$1" = --version ] && exit 0\n'
                      '[ "$1" = -mno-avx512fp16 ] && exit 0\n'
                      f'echo build >> {calls}\n'
                      'echo "self_attention.cc:1: error: broken" >&2\n'
                      'exit 1\n')
  compiler.chmod(compiler.stat().st_mode | stat.S_IEXEC)
  monkeypatch.setenv('CXX', str(compiler))
  with pytest.raises(kernel_library.KernelUnavailableError) as error:
    kernel_library.load()
  assert '\n' not in str(error.value)
  assert 'error: broken' in str(error.value)
  # No library and no partial file; one note of the failure ...
  left = os.listdir(fresh_build / 'cache')
  assert len(left) == 1 and left[0].endswith('.failed'), left
  # ... which the next process reports without compiling again.
  kernel_library.load.cache_clear()
  with pytest.raises(kernel_library.KernelUnavailableError,
                     match='error: broken.*delete it to retry'):
    kernel_library.load()
  assert calls.read_text() == 'build\n'


def test_startup_line_says_which_attention_runs():
  assert fused_attention.describe('auto', tf.bfloat16) == (
      'fused CPU kernel (auto)')
  assert fused_attention.describe('auto', tf.float32) == (
      'TensorFlow ops (auto: float32 networks)')
  assert fused_attention.describe('fused', tf.float32) == (
      'fused CPU kernel (fused)')
  assert fused_attention.describe('tensorflow', tf.bfloat16) == (
      'TensorFlow ops (requested)')


def test_a_build_lands_in_the_cache_and_is_reused(fresh_build):
  kernel_library.load()
  built = os.listdir(fresh_build / 'cache')
  assert len(built) == 1 and built[0].endswith('.so'), built
  kernel_library.load.cache_clear()
  mtime = os.path.getmtime(fresh_build / 'cache' / built[0])
  kernel_library.load()  # Loads the cached file, no second build.
  assert os.listdir(fresh_build / 'cache') == built
  assert os.path.getmtime(fresh_build / 'cache' / built[0]) == mtime


def test_a_second_cache_directory_does_not_register_the_op_twice(
    fresh_build, monkeypatch):
  qkv = tf.random.stateless_normal([2, 5, 3 * 4], seed=[0, 1])
  graph = tf.function(lambda x: fused_attention.self_attention(x, 2))
  want = graph(qkv)  # The kernel of whichever file the process loaded.
  for name in ('first', 'second'):
    monkeypatch.setenv('TFP_FLOWPP_KERNEL_CACHE', str(fresh_build / name))
    kernel_library.load.cache_clear()
    kernel_library.load()
    assert len(os.listdir(fresh_build / name)) == 1  # Built there ...
  # ... but not loaded: two files' kernels would be duplicate registrations,
  # which TensorFlow refuses to run in a graph.
  got = tf.function(lambda x: fused_attention.self_attention(x, 2))(qkv)
  np.testing.assert_array_equal(got, want)


def test_compression_codes_with_tensorflow_attention():
  # The fused kernel depends on the compiler and CPU at hand, which a
  # compressed file's environment fingerprint does not record.
  config = configs_util.tiny_model_config(
      dtype='float64', precision='float32', attention_kernel='fused')
  model = model_builder.build_model(config)
  assert blocks.attention_kernel_of(model) == ('fused',)
  twin = float64_model(model, config)
  assert twin is not model
  assert blocks.attention_kernel_of(twin) == ('tensorflow',)
  for kernel in ('tensorflow', 'auto'):  # auto: TF ops in float64.
    plain = model_builder.build_model(config.replace(attention_kernel=kernel))
    assert blocks.attention_kernel_of(plain) == ('tensorflow',)
    assert float64_model(plain, config) is plain
  # auto resolves by what the networks compute in.
  for policy, kernels in (('float32', ('tensorflow',)),
                          ('mixed_bfloat16', ('fused',))):
    model = model_builder.build_model(
        configs_util.tiny_model_config(precision=policy))
    assert blocks.attention_kernel_of(model) == kernels
