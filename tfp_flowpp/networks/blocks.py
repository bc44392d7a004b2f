"""Residual blocks of the Flow++ coupling network (Ho et al. 2019, §3.3).

* `GatedConvBlock`: concat_elu → conv3×3 (+ 1×1 projection of an optional
  context) → concat_elu → dropout → conv (1×1 or 3×3) to 2F → GLU → residual.
* `GatedAttentionBlock`: + learned positional embedding → 1×1 to Q, K, V →
  multi-head softmax(QKᵀ/√d)V → dropout → 1×1 to 2F → GLU → residual.
* `PointwiseMaxoutBlock`: the official "no attention" ablation's
  parameter-matched replacement (1×1 to 3F → max over the 3 → 1×1 to 2F →
  GLU → residual).
"""

import math

import tensorflow as tf

from tfp_flowpp.networks import layers

__all__ = ['GatedConvBlock', 'GatedAttentionBlock', 'PointwiseMaxoutBlock']


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

  def __call__(self, x, positional_embedding, training=False):
    shape = tf.shape(x)
    batch, height, width = shape[0], shape[1], shape[2]
    steps = height * width
    dim = self.filters // self.heads
    qkv = self.qkv(x + tf.cast(positional_embedding, x.dtype))
    qkv = tf.reshape(qkv, [batch, steps, 3, self.heads, dim])
    q, k, v = tf.unstack(tf.transpose(qkv, [2, 0, 3, 1, 4]), axis=0)
    logits = tf.matmul(q, k, transpose_b=True) / math.sqrt(dim)
    weights = tf.nn.softmax(logits, axis=-1)
    attended = tf.transpose(tf.matmul(weights, v), [0, 2, 1, 3])
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

  def __call__(self, x, positional_embedding, training=False):
    h = self.proj(x + tf.cast(positional_embedding, x.dtype))
    h = tf.reshape(h, tf.concat([tf.shape(x), [3]], 0))
    h = _dropout(tf.reduce_max(h, axis=-1), self.dropout, training)
    return x + layers.gate(self.out(h))
