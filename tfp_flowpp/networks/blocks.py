"""Residual blocks of the Flow++ coupling network (Ho et al. 2019, §3.3).

* `GatedConvBlock`: concat_elu → conv3×3 (+ 1×1 projection of an optional
  context) → concat_elu → dropout → conv (1×1 or 3×3) to 2F → GLU → residual.
* `GatedAttentionBlock`: + learned positional embedding → 1×1 to Q, K, V →
  multi-head softmax(QKᵀ/√d)V → dropout → 1×1 to 2F → GLU → residual.
  On a CPU the attention core is memory-bound (head dimensions of 12–24
  make the [N, N] logits the largest tensors of the model), so it is
  computed per group of images whose [heads, N, N] tensors fit in cache,
  with Q pre-scaled by 1/√d and a hand-written gradient that needs no
  [N, N]-sized reduction (``rowsum(dP ⊙ P) = rowsum(dO ⊙ O)``); see
  `attention` — same values and gradients as the plain formula.
* `PointwiseMaxoutBlock`: the official "no attention" ablation's
  parameter-matched replacement (1×1 to 3F → max over the 3 → 1×1 to 2F →
  GLU → residual).
"""

import math

import tensorflow as tf

from tfp_flowpp.networks import layers

__all__ = ['GatedConvBlock', 'GatedAttentionBlock', 'PointwiseMaxoutBlock']


# Largest [images, heads, N, N] attention tensor processed at once (bytes):
# big enough for efficient kernels, small enough to stay in the L2/L3 cache
# between the QKᵀ matmul, the softmax and the PV matmul (measured on a
# 2-core Zen 5: 1.5–2× faster attention forward + backward than one
# batch-wide pass for the Fashion-MNIST and CIFAR-10 Flow++ shapes).
ATTENTION_CHUNK_BYTES = 6 * 2**20
# Up to this many chunks are unrolled in the graph (fastest); beyond that —
# and whenever the batch size is unknown at trace time — a `tf.map_fn` loop
# keeps the graph (and tracing time) independent of the batch size.
MAX_UNROLLED_ATTENTION_CHUNKS = 16


@tf.custom_gradient
def _attention_core(q, k, v):
  """softmax(q kᵀ) v over the last two axes; q already scaled by 1/√d.

  The gradient uses ``rowsum(dP ⊙ P) = rowsum(dO ⊙ O)`` (dP = dO vᵀ,
  O = P v): an [N, d] reduction instead of the [N, N] product and sum the
  generic softmax gradient builds, so the backward pass reads and writes
  two fewer [N, N] tensors.
  """
  p = tf.nn.softmax(tf.matmul(q, k, transpose_b=True), axis=-1)
  o = tf.matmul(p, v)

  def grad(do):
    dp = tf.matmul(do, v, transpose_b=True)
    ds = p * (dp - tf.reduce_sum(do * o, axis=-1, keepdims=True))
    return (tf.matmul(ds, k), tf.matmul(ds, q, transpose_a=True),
            tf.matmul(p, do, transpose_a=True))

  return o, grad


def attention(q, k, v):
  """Multi-head ``softmax(q kᵀ / √d) v`` for ``[B, heads, N, d]`` tensors.

  Equal to the plain formula (to float rounding; gradients included),
  computed in groups of images with at most `ATTENTION_CHUNK_BYTES` of
  logits each — unrolled for a static batch of at most
  `MAX_UNROLLED_ATTENTION_CHUNKS` groups, else in a `tf.map_fn` loop.
  """
  heads, steps, dim = q.shape[1:]
  q = q * tf.constant(1. / math.sqrt(dim), q.dtype)
  if steps is None or heads is None:
    return _attention_core(q, k, v)
  per_image = heads * steps * steps * q.dtype.size
  images_per_chunk = max(1, ATTENTION_CHUNK_BYTES // per_image)
  batch = q.shape[0]
  if batch is not None:
    chunks = -(-batch // images_per_chunk)
    if chunks <= 1:
      return _attention_core(q, k, v)
    if chunks <= MAX_UNROLLED_ATTENTION_CHUNKS:
      sizes = [batch // chunks + (i < batch % chunks) for i in range(chunks)]
      parts = zip(tf.split(q, sizes), tf.split(k, sizes), tf.split(v, sizes))
      return tf.concat([_attention_core(*p) for p in parts], axis=0)
  batch = tf.shape(q)[0]
  chunks = tf.maximum(1, -(-batch // images_per_chunk))
  size = -(-batch // chunks)

  def grouped(t):
    t = tf.pad(t, [[0, chunks * size - batch], [0, 0], [0, 0], [0, 0]])
    return tf.reshape(t, [chunks, size, heads, steps, dim])

  out = tf.map_fn(
      lambda qkv: _attention_core(*qkv), (grouped(q), grouped(k), grouped(v)),
      fn_output_signature=q.dtype)
  return tf.reshape(out, [chunks * size, heads, steps, dim])[:batch]


def _dropout(x, rate, training):
  if training and rate > 0:
    return tf.nn.dropout(x, rate=rate)
  return x


class GatedConvBlock(tf.Module):
  """Gated residual convolution with an optional context shortcut."""

  def __init__(self,
               filters,
               context_channels=None,
               second_kernel_size=1,
               dropout=0.,
               weight_norm=False,
               dtype=tf.float32,
               rng=None,
               name=None):
    super().__init__(name=name)
    self.dropout = float(dropout)
    with self.name_scope:
      self.conv1 = layers.Conv2D(
          2 * filters,
          filters,
          3,
          weight_norm=weight_norm,
          dtype=dtype,
          rng=rng,
          name='conv1')
      self.context_proj = None
      if context_channels:
        self.context_proj = layers.Conv2D(
            2 * context_channels,
            filters,
            1,
            weight_norm=weight_norm,
            dtype=dtype,
            rng=rng,
            name='context_proj')
      self.conv2 = layers.Conv2D(
          2 * filters,
          2 * filters,
          second_kernel_size,
          init_scale=0.1,
          weight_norm=weight_norm,
          dtype=dtype,
          rng=rng,
          name='conv2')

  def __call__(self, x, context=None, training=False):
    h = self.conv1(layers.concat_elu(x))
    if self.context_proj is not None:
      if context is None:
        raise ValueError(f'{self.name} was built for a context but got none.')
      h += self.context_proj(layers.concat_elu(context))
    h = _dropout(layers.concat_elu(h), self.dropout, training)
    return x + layers.gate(self.conv2(h))


class GatedAttentionBlock(tf.Module):
  """Gated multi-head self-attention over all H·W positions."""

  def __init__(self,
               filters,
               heads=4,
               dropout=0.,
               weight_norm=False,
               dtype=tf.float32,
               rng=None,
               name=None):
    super().__init__(name=name)
    if filters % heads:
      raise ValueError(f'{filters} filters do not split into {heads} heads.')
    self.filters = int(filters)
    self.heads = int(heads)
    self.dropout = float(dropout)
    with self.name_scope:
      self.qkv = layers.Conv2D(
          filters,
          3 * filters,
          1,
          weight_norm=weight_norm,
          dtype=dtype,
          rng=rng,
          name='qkv')
      self.out = layers.Conv2D(
          filters,
          2 * filters,
          1,
          init_scale=0.1,
          weight_norm=weight_norm,
          dtype=dtype,
          rng=rng,
          name='out')

  @classmethod
  def from_config(cls, filters, config, dtype=tf.float32, rng=None, name=None):
    """The block of a `GatedResNet` with `GatedResNetConfig` ``config``."""
    return cls(
        filters,
        heads=config.heads,
        dropout=config.dropout,
        weight_norm=config.weight_norm,
        dtype=dtype,
        rng=rng,
        name=name)

  def __call__(self, x, positional_embedding, training=False):
    # Static sizes where known, so `attention` can size its chunks.
    batch, height, width = (
        s if s is not None else tf.shape(x)[i]
        for i, s in enumerate(x.shape[:3]))
    steps = height * width
    dim = self.filters // self.heads
    qkv = self.qkv(x + tf.cast(positional_embedding, x.dtype))
    qkv = tf.reshape(qkv, [batch, steps, 3, self.heads, dim])
    q, k, v = tf.unstack(tf.transpose(qkv, [2, 0, 3, 1, 4]), axis=0)
    attended = tf.transpose(attention(q, k, v), [0, 2, 1, 3])
    attended = tf.reshape(attended, [batch, height, width, self.filters])
    attended = _dropout(attended, self.dropout, training)
    return x + layers.gate(self.out(attended))


class PointwiseMaxoutBlock(tf.Module):
  """Attention-free, parameter-matched stand-in (official ablation)."""

  def __init__(self,
               filters,
               dropout=0.,
               weight_norm=False,
               dtype=tf.float32,
               rng=None,
               name=None):
    super().__init__(name=name)
    self.filters = int(filters)
    self.dropout = float(dropout)
    with self.name_scope:
      self.proj = layers.Conv2D(
          filters,
          3 * filters,
          1,
          weight_norm=weight_norm,
          dtype=dtype,
          rng=rng,
          name='proj')
      self.out = layers.Conv2D(
          filters,
          2 * filters,
          1,
          init_scale=0.1,
          weight_norm=weight_norm,
          dtype=dtype,
          rng=rng,
          name='out')

  @classmethod
  def from_config(cls, filters, config, dtype=tf.float32, rng=None, name=None):
    """The block of a `GatedResNet` with `GatedResNetConfig` ``config``."""
    return cls(
        filters,
        dropout=config.dropout,
        weight_norm=config.weight_norm,
        dtype=dtype,
        rng=rng,
        name=name)

  def __call__(self, x, positional_embedding, training=False):
    h = self.proj(x + tf.cast(positional_embedding, x.dtype))
    h = tf.reshape(h, tf.concat([tf.shape(x), [3]], 0))
    h = _dropout(tf.reduce_max(h, axis=-1), self.dropout, training)
    return x + layers.gate(self.out(h))
