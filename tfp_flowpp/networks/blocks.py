"""Residual blocks of the Flow++ coupling network (Ho et al. 2019, §3.3).

`GatedConvBlock` (gated residual convolution), `GatedAttentionBlock` (gated
multi-head self-attention over all positions, computed by the cache-chunked
`attention`) and `PointwiseMaxoutBlock` (the official no-attention
ablation's parameter-matched replacement).

Dropout is stateless: ``training`` is ``False``, ``True`` (fresh masks) or a
stateless ``[2]`` seed, which each block folds with its ``dropout_stream``
(distinct per block after `assign_dropout_streams`), so one seed per step
gives the same masks on every run and after a resume.
"""

import contextlib
import math

import tensorflow as tf

from tfp_flowpp.networks import fused_attention
from tfp_flowpp.networks import kernel_library
from tfp_flowpp.networks import layers

__all__ = [
    'GatedConvBlock', 'GatedAttentionBlock', 'PointwiseMaxoutBlock',
    'assign_dropout_streams', 'attention', 'attention_kernel_of',
    'portable_attention'
]


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
# Resolution of a dropout draw (16-bit uniforms, see `_dropout`).
_DROPOUT_LEVELS = 2**16


@contextlib.contextmanager
def portable_attention():
  """Attention traced inside is TensorFlow's ops with their own gradient.

  For graphs that are saved (`export.export_saved_model`), which must run
  wherever TensorFlow (or TF Serving) runs: neither a fused CPU kernel
  (`fused_attention`, `fused_elementwise`: custom ops compiled on this
  machine; this is `kernel_library.portable_graphs`) nor the hand-written
  gradient of `attention` is used. The latter matters because
  with ``tf.saved_model.SaveOptions(experimental_custom_gradients=True)``,
  which the export needs for ``flow_log_prob``'s frozen gradient, TensorFlow
  traces and serialises a gradient function for every custom-gradient op of
  every saved function. Both are speed-ups only; the forward values are the
  same function either way.

  >>> import tensorflow as tf
  >>> from tfp_flowpp.networks import blocks
  >>> q = tf.ones([1, 1, 3, 2])
  >>> @tf.function
  ... def f(q):
  ...   return blocks.attention(q, q, q)
  >>> def identity_n_ops(q):
  ...   graph = f.get_concrete_function(q).graph
  ...   return sum(op.type == 'IdentityN' for op in graph.get_operations())
  >>> identity_n_ops(q) > 0  # tf.custom_gradient's marker op
  True
  >>> with blocks.portable_attention():
  ...   print(identity_n_ops(tf.ones([2, 1, 3, 2])))  # A new trace.
  0
  """
  with kernel_library.portable_graphs():
    yield


def _portable():
  return kernel_library.in_portable_graph()


def _plain_attention_core(q, k, v):
  return tf.matmul(tf.nn.softmax(tf.matmul(q, k, transpose_b=True), axis=-1),
                   v)


def _core(q, k, v):
  if _portable():
    return _plain_attention_core(q, k, v)
  return _attention_core(q, k, v)


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

  Scaled dot-product attention [(Vaswani et al., 2017)][1] per image and
  head:

  ```none
  attention(q, k, v) = softmax(q kᵀ / √d) v        (softmax over the last axis)
  ```

  Equal to the plain formula (to float rounding; gradients included), but
  computed for speed on a CPU, where the attention core is memory-bound
  (head dimensions of 12-24 make the [N, N] logits the largest tensors of
  the model): images are processed in groups with at most
  `ATTENTION_CHUNK_BYTES` of ``[heads, N, N]`` logits each, so they stay in
  cache between the QKᵀ matmul, the softmax and the PV matmul -- unrolled for
  a static batch of at most `MAX_UNROLLED_ATTENTION_CHUNKS` groups, else in
  a `tf.map_fn` loop. ``q`` is pre-scaled by 1/√d, and a hand-written
  gradient uses ``rowsum(dP ⊙ P) = rowsum(dO ⊙ O)`` (``dP = dO vᵀ``,
  ``O = P v``), an [N, d] reduction instead of the [N, N] product and sum
  the generic softmax gradient builds.

  #### Examples

  >>> import numpy as np
  >>> import tensorflow as tf
  >>> from tfp_flowpp.networks import blocks
  >>> q, k, v = (tf.random.stateless_normal([2, 2, 5, 4], seed=[i, 0])
  ...            for i in range(3))
  >>> with tf.GradientTape(persistent=True) as tape:
  ...   tape.watch([q, k, v])
  ...   out = blocks.attention(q, k, v)
  ...   plain = tf.nn.softmax(q @ tf.transpose(k, [0, 1, 3, 2]) / 2.) @ v
  >>> np.allclose(out, plain, atol=1e-6)
  True
  >>> all(np.allclose(a, b, atol=1e-5) for a, b in zip(
  ...     tape.gradient(out, [q, k, v]), tape.gradient(plain, [q, k, v])))
  True

  #### References

  [1]: Ashish Vaswani, Noam Shazeer, Niki Parmar, Jakob Uszkoreit, Llion
       Jones, Aidan N. Gomez, Łukasz Kaiser and Illia Polosukhin. Attention Is
       All You Need. In _Neural Information Processing Systems_, 2017.
       https://arxiv.org/abs/1706.03762
  """
  heads, steps, dim = q.shape[1:]
  q = q * tf.constant(1. / math.sqrt(dim), q.dtype)
  if steps is None or heads is None:
    return _core(q, k, v)
  per_image = heads * steps * steps * q.dtype.size
  images_per_chunk = max(1, ATTENTION_CHUNK_BYTES // per_image)
  batch = q.shape[0]
  if batch is not None:
    chunks = -(-batch // images_per_chunk)
    if chunks <= 1:
      return _core(q, k, v)
    if chunks <= MAX_UNROLLED_ATTENTION_CHUNKS:
      sizes = [batch // chunks + (i < batch % chunks) for i in range(chunks)]
      parts = zip(tf.split(q, sizes), tf.split(k, sizes), tf.split(v, sizes))
      return tf.concat([_core(*p) for p in parts], axis=0)
  batch = tf.shape(q)[0]
  chunks = tf.maximum(1, -(-batch // images_per_chunk))
  size = -(-batch // chunks)

  def grouped(t):
    t = tf.pad(t, [[0, chunks * size - batch], [0, 0], [0, 0], [0, 0]])
    return tf.reshape(t, [chunks, size, heads, steps, dim])

  out = tf.map_fn(
      lambda qkv: _core(*qkv), (grouped(q), grouped(k), grouped(v)),
      fn_output_signature=q.dtype)
  return tf.reshape(out, [chunks * size, heads, steps, dim])[:batch]


def _dropout(x, rate, training, stream):
  """Stateless dropout; ``training``: False, True or a ``[2]`` seed."""
  if not rate or training is None or training is False:
    return x
  if training is True:  # Fresh masks: a seed from the stateful generator.
    seed = tf.random.uniform([2], -2**31, 2**31 - 1, dtype=tf.int32)
  else:
    seed = tf.random.experimental.stateless_fold_in(
        tf.convert_to_tensor(training), stream)
  # Two 16-bit uniforms from each 32-bit Philox output: the generator is the
  # cost of CPU dropout, and `stateless_dropout` spends a full 32-bit draw
  # (and a float conversion) on every element. Measured on a 2-core Xeon
  # (AMX) for a [16, 32, 32, 160] map: 13.3 -> 7.6 ms (float32), 14.8 ->
  # 7.3 ms (bfloat16); it was 9.5% of the CIFAR-10 train step's op time.
  # An element is kept when its draw is >= round(rate · 2¹⁶), i.e. with
  # probability 1 − rate to within 2⁻¹⁷, and kept values are scaled by the
  # exact inverse of that probability, so E[dropout(x)] = x.
  threshold = int(round(rate * _DROPOUT_LEVELS))
  size = tf.size(x)
  bits = tf.random.stateless_uniform([(size + 1) // 2], seed, minval=None,
                                     maxval=None, dtype=tf.uint32)
  bits = tf.reshape(tf.bitcast(bits, tf.uint16), [-1])[:size]
  keep = tf.reshape(bits >= threshold, tf.shape(x))
  scale = tf.constant(_DROPOUT_LEVELS / (_DROPOUT_LEVELS - threshold), x.dtype)
  return tf.where(keep, x * scale, tf.zeros([], x.dtype))


class GatedConvBlock(tf.Module):
  """Gated residual convolution with an optional context shortcut.

  The gated residual block of the Flow++ coupling network
  [(Ho et al., 2019)][1], §3.3, after PixelCNN++ [(Salimans et al., 2017)][2]
  with the gated linear unit of [(Dauphin et al., 2017)][3], on
  ``[N, H, W, F]`` features:

  ```none
  h = conv3×3(concat_elu(x)) [+ conv1×1(concat_elu(context))]     → F
  h = dropout(concat_elu(h))
  y = x + gate(conv_k×k(h))      (→ 2F, init scale 0.1, k = second_kernel_size)
  ```

  ``context`` (``[N, H, W, context_channels]``) is required if and only if
  the block was built with ``context_channels``. Dropout is active only
  when ``training`` is ``True`` or a stateless seed (see module docstring).

  #### Examples

  The block computes exactly the formula above:

  >>> import numpy as np
  >>> import tensorflow as tf
  >>> from tfp_flowpp.networks import blocks
  >>> from tfp_flowpp.networks import layers
  >>> block = blocks.GatedConvBlock(
  ...     4, context_channels=2, rng=np.random.default_rng(0))
  >>> x = tf.random.stateless_normal([2, 3, 3, 4], seed=[1, 2])
  >>> context = tf.random.stateless_normal([2, 3, 3, 2], seed=[3, 4])
  >>> h = (block.conv1(layers.concat_elu(x)) +
  ...      block.context_proj(layers.concat_elu(context)))
  >>> np.allclose(block(x, context=context),
  ...             x + layers.gate(block.conv2(layers.concat_elu(h))),
  ...             atol=1e-6)
  True

  #### References

  [1]: Jonathan Ho, Xi Chen, Aravind Srinivas, Yan Duan and Pieter Abbeel.
       Flow++: Improving Flow-Based Generative Models with Variational
       Dequantization and Architecture Design. In _International Conference
       on Machine Learning_, 2019. https://arxiv.org/abs/1902.00275

  [2]: Tim Salimans, Andrej Karpathy, Xi Chen and Diederik P. Kingma.
       PixelCNN++: Improving the PixelCNN with Discretized Logistic Mixture
       Likelihood and Other Modifications. In _International Conference on
       Learning Representations_, 2017. https://arxiv.org/abs/1701.05517

  [3]: Yann N. Dauphin, Angela Fan, Michael Auli and David Grangier.
       Language Modeling with Gated Convolutional Networks. In _International
       Conference on Machine Learning_, 2017. https://arxiv.org/abs/1612.08083
  """

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
    self.dropout_stream = 0  # See `assign_dropout_streams`.
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
    h = _dropout(layers.concat_elu(h), self.dropout, training,
                 self.dropout_stream)
    return layers.gated_residual(x, self.conv2(h))


class GatedAttentionBlock(tf.Module):
  """Gated multi-head self-attention over all H·W positions.

  The attention block of the Flow++ coupling network [(Ho et al., 2019)][1],
  §3.3: multi-head self-attention [(Vaswani et al., 2017)][2] over the
  ``N = H·W`` positions of ``[B, H, W, F]`` features, with a learned
  positional embedding ``P`` (``[H, W, F]``, shared by the blocks of a
  `GatedResNet`) and a gated residual output [(Dauphin et al., 2017)][3]:

  ```none
  [q, k, v] = conv1×1(x + P), split into `heads` heads of d = F / heads
  o = concat_heads(softmax(q kᵀ / √d) v)                      (`attention`)
  y = x + gate(conv1×1(dropout(o)))          (→ 2F, init scale 0.1)
  ```

  ``kernel`` chooses how ``o`` is computed (`fused_attention.KERNELS`):
  the fused CPU kernel (`fused_attention.self_attention`) or TensorFlow's
  ops (`attention`); the function is the same.

  #### Examples

  Without positional information self-attention is equivariant to any
  permutation of the pixels (here a 180° rotation):

  >>> import numpy as np
  >>> import tensorflow as tf
  >>> from tfp_flowpp.networks import blocks
  >>> block = blocks.GatedAttentionBlock(
  ...     8, heads=2, rng=np.random.default_rng(0))
  >>> x = tf.random.stateless_normal([2, 3, 3, 8], seed=[1, 2])
  >>> no_position = tf.zeros([3, 3, 8])
  >>> y = block(x, no_position)
  >>> y.shape
  TensorShape([2, 3, 3, 8])
  >>> rotate = lambda t: tf.reverse(t, axis=[1, 2])
  >>> np.allclose(block(rotate(x), no_position), rotate(y), atol=1e-5)
  True

  #### References

  [1]: Jonathan Ho, Xi Chen, Aravind Srinivas, Yan Duan and Pieter Abbeel.
       Flow++: Improving Flow-Based Generative Models with Variational
       Dequantization and Architecture Design. In _International Conference
       on Machine Learning_, 2019. https://arxiv.org/abs/1902.00275

  [2]: Ashish Vaswani, Noam Shazeer, Niki Parmar, Jakob Uszkoreit, Llion
       Jones, Aidan N. Gomez, Łukasz Kaiser and Illia Polosukhin. Attention Is
       All You Need. In _Neural Information Processing Systems_, 2017.
       https://arxiv.org/abs/1706.03762

  [3]: Yann N. Dauphin, Angela Fan, Michael Auli and David Grangier.
       Language Modeling with Gated Convolutional Networks. In _International
       Conference on Machine Learning_, 2017. https://arxiv.org/abs/1612.08083
  """

  def __init__(self,
               filters,
               heads=4,
               dropout=0.,
               weight_norm=False,
               kernel='auto',
               dtype=tf.float32,
               rng=None,
               name=None):
    super().__init__(name=name)
    if filters % heads:
      raise ValueError(f'{filters} filters do not split into {heads} heads.')
    if kernel not in fused_attention.KERNELS:
      raise ValueError(f'kernel must be one of {fused_attention.KERNELS}, '
                       f'got {kernel!r}.')
    self.filters = int(filters)
    self.heads = int(heads)
    self.kernel = kernel
    self.dropout = float(dropout)
    self.dropout_stream = 0  # See `assign_dropout_streams`.
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
        kernel=config.attention_kernel,
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
    if fused_attention.uses_fused_kernel(self.kernel, qkv.dtype, dim,
                                         _portable()):
      attended = fused_attention.self_attention(
          tf.reshape(qkv, [batch, steps, 3 * self.filters]), self.heads)
    else:
      qkv = tf.reshape(qkv, [batch, steps, 3, self.heads, dim])
      q, k, v = tf.unstack(tf.transpose(qkv, [2, 0, 3, 1, 4]), axis=0)
      attended = tf.transpose(attention(q, k, v), [0, 2, 1, 3])
    attended = tf.reshape(attended, [batch, height, width, self.filters])
    attended = _dropout(attended, self.dropout, training,
                        self.dropout_stream)
    return layers.gated_residual(x, self.out(attended))


def attention_kernel_of(module):
  """What ``module``'s attention blocks compute with here.

  The sorted distinct kernels of its `GatedAttentionBlock`s, each
  ``'fused'`` or ``'tensorflow'`` as resolved on this machine for a graph
  traced now (`fused_attention.uses_fused_kernel`, for the dtype the block
  computes in: the ``compute_dtype`` of the network it belongs to, else its
  variables'); ``()`` without attention.
  """
  dtypes = {}  # id(block) -> (block, dtype it computes in)
  for m in module.submodules:
    if isinstance(m, GatedAttentionBlock):
      dtypes.setdefault(id(m), (m, m.trainable_variables[0].dtype))
  for network in (module,) + tuple(module.submodules):
    compute_dtype = getattr(network, 'compute_dtype', None)
    if compute_dtype is not None:
      for m in network.submodules:
        if isinstance(m, GatedAttentionBlock):
          dtypes[id(m)] = (m, compute_dtype)
  return tuple(sorted({
      'fused' if fused_attention.uses_fused_kernel(
          m.kernel, dtype, m.filters // m.heads) else 'tensorflow'
      for m, dtype in dtypes.values()
  }))


class PointwiseMaxoutBlock(tf.Module):
  """Attention-free, parameter-matched stand-in (official ablation).

  The replacement for `GatedAttentionBlock` in the official Flow++
  no-attention ablation [(Ho et al., 2019)][1]: the same 1×1 projections
  (hence exactly the same parameter count) with a pointwise maxout
  [(Goodfellow et al., 2013)][2] instead of attention, so the ablation
  isolates attention from capacity:

  ```none
  p = conv1×1(x + P)                       (→ 3F)
  h[..., c] = max(p[..., 3c], p[..., 3c + 1], p[..., 3c + 2])
  y = x + gate(conv1×1(dropout(h)))        (→ 2F, init scale 0.1)
  ```

  #### Examples

  >>> import numpy as np
  >>> import tensorflow as tf
  >>> from tfp_flowpp.networks import blocks
  >>> maxout = blocks.PointwiseMaxoutBlock(8, rng=np.random.default_rng(0))
  >>> attention = blocks.GatedAttentionBlock(8, rng=np.random.default_rng(0))
  >>> count = lambda m: sum(v.shape.num_elements() for v in m.variables)
  >>> count(maxout), count(attention)
  (360, 360)
  >>> x = tf.random.stateless_normal([2, 3, 3, 8], seed=[1, 2])
  >>> maxout(x, tf.zeros([3, 3, 8])).shape
  TensorShape([2, 3, 3, 8])

  #### References

  [1]: Jonathan Ho, Xi Chen, Aravind Srinivas, Yan Duan and Pieter Abbeel.
       Flow++: Improving Flow-Based Generative Models with Variational
       Dequantization and Architecture Design. In _International Conference
       on Machine Learning_, 2019. https://arxiv.org/abs/1902.00275

  [2]: Ian J. Goodfellow, David Warde-Farley, Mehdi Mirza, Aaron Courville
       and Yoshua Bengio. Maxout Networks. In _International Conference on
       Machine Learning_, 2013. https://arxiv.org/abs/1302.4389
  """

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
    self.dropout_stream = 0  # See `assign_dropout_streams`.
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
    h = _dropout(tf.reduce_max(h, axis=-1), self.dropout, training,
                 self.dropout_stream)
    return layers.gated_residual(x, self.out(h))


_DROPOUT_BLOCKS = (GatedConvBlock, GatedAttentionBlock, PointwiseMaxoutBlock)


def assign_dropout_streams(module):
  """Numbers the dropout blocks under ``module`` 0, 1, … (``dropout_stream``).

  The order is that of ``module.submodules``, a function of the module
  structure only, so the numbering (and with it every dropout mask of a
  seeded step) is the same in every process that builds the same model.

  Args:
    module: a `tf.Module`, e.g. a `DiscreteImageFlow`.

  Returns:
    The number of dropout blocks.
  """
  found = [m for m in module.submodules if isinstance(m, _DROPOUT_BLOCKS)]
  for index, block in enumerate(found):
    block.dropout_stream = index
  return len(found)
