"""A fused CPU kernel for multi-head self-attention, compiled on first use.

The attention core of a Flow++ coupling network is memory-bound on a CPU:
with head dimensions of 12-24 the ``[N, N]`` logits are the largest tensors
of the model, and TensorFlow's ops write and read them several times (QKᵀ,
softmax, PV and, in the gradient, four more ``[N, N]`` passes). The kernel
in ``kernels/self_attention.cc`` computes

```none
qkv: [B, N, 3·F] (q, k, v of H heads of d = F/H, the 1×1 projection's layout)
o[b, n, h] = Σ_m softmax_m(q[b, n, h] · k[b, m, h] / √d) v[b, m, h]   → [B, N, F]
```

one image and head at a time, a cache-sized block of query rows at a time
(the logits live only in that block; the per-row log-normaliser is its
only extra output), and its gradient from the same blocks (the
``rowsum(dP ⊙ P)`` of the softmax gradient is computed exactly there).
float32 and float16 inputs are computed in float32, float64 in float64;
bfloat16 inputs use the CPU's AVX512-BF16 dot products (bfloat16 operands,
float32 sums: twice the float32 rate) where it has them, with the softmax
in float32, else the float32 path. Inputs and outputs stay in the
``[B, N, heads·d]`` layout of the projections, so the transposes around the
core disappear too.

The kernel is compiled on first use with the other fused kernels into one
op library (`kernel_library`: the system's C++ compiler, ``-march=native``,
a cache directory keyed by a hash of sources, compiler, TensorFlow and
CPU).

``attention_kernel`` (a `ModelConfig` field, ``--attention_kernel``):

```none
auto         the fused kernel for 16-bit networks (mixed_bfloat16,
             mixed_float16) where it applies, else TensorFlow's ops
fused        the fused kernel where it applies (any float dtype); an error
             if it cannot be built
tensorflow   TensorFlow's ops (`blocks.attention`)
```

`auto` leaves float32 and float64 to TensorFlow because oneDNN's float32
products are about as fast as the kernel's: on a 2-core Zen 5 the fused
kernel ran the float32 train steps of the CIFAR-10, Fashion-MNIST and
digits configs at 0.84-1.24× TensorFlow's speed (two runs), against
1.03-1.42× with bfloat16 networks; the attention core alone is 2.2-5× faster
than TensorFlow's float16 CPU ops (docs/benchmarks.md, section speed).

It applies on CPUs only (no GPU is visible) and outside XLA clusters and
SavedModel exports (`kernel_library.portable_graphs`), which keep
TensorFlow's ops so a SavedModel runs wherever TensorFlow (or TF Serving)
does. Both paths compute the same function; they differ by float rounding.
"""

import tensorflow as tf

from tfp_flowpp.networks import kernel_library
from tfp_flowpp.networks.kernel_library import KernelUnavailableError

__all__ = [
    'KERNELS', 'KernelUnavailableError', 'self_attention', 'uses_fused_kernel',
    'describe'
]

KERNELS = ('auto', 'fused', 'tensorflow')

# What `auto` uses the kernel for: 16-bit networks (see the module docstring).
_AUTO_DTYPES = (tf.bfloat16, tf.float16)
# Input dtype -> the largest head dimension the kernel takes (four 64-byte
# vectors of its accumulation dtype: float64 for float64, else float32).
_MAX_HEAD_DIM = {tf.float32: 64, tf.bfloat16: 64, tf.float16: 64,
                 tf.float64: 32}


def self_attention(qkv, heads):
  """``[B, N, 3·F] → [B, N, F]``: multi-head self-attention, fused.

  The same function as `blocks.attention` on the heads of ``qkv`` (its
  channels are ``[q | k | v]``, each ``heads × d``, as the attention block's
  1×1 projection lays them out); differentiable.

  #### Examples

  >>> import numpy as np
  >>> import tensorflow as tf
  >>> from tfp_flowpp.networks import blocks, fused_attention
  >>> qkv = tf.random.stateless_normal([2, 6, 3 * 8], seed=[1, 2])
  >>> q, k, v = (tf.transpose(tf.reshape(t, [2, 6, 2, 4]), [0, 2, 1, 3])
  ...            for t in tf.split(qkv, 3, axis=-1))
  >>> plain = tf.reshape(tf.transpose(blocks.attention(q, k, v),
  ...                                 [0, 2, 1, 3]), [2, 6, 8])
  >>> fused = fused_attention.self_attention(qkv, heads=2)
  >>> bool(np.allclose(fused, plain, atol=1e-6))
  True

  Args:
    qkv: ``[B, N, 3·F]`` tensor of float32, bfloat16, float16 or float64.
    heads: number of heads H (divides F).

  Returns:
    ``[B, N, F]`` in ``qkv``'s dtype.

  Raises:
    KernelUnavailableError: the kernel cannot be built here.
  """
  accumulate = tf.float64 if qkv.dtype == tf.float64 else tf.float32
  output, _ = kernel_library.load().flowpp_self_attention(
      qkv, heads=heads, A=accumulate)
  return output


def uses_fused_kernel(kernel, dtype, head_dim=1, portable=False):
  """Whether attention traced now computes with the fused kernel.

  Args:
    kernel: one of `KERNELS`.
    dtype: the attention inputs' dtype.
    head_dim: d, the width of a head (the kernel takes up to 64, 32 in
      float64).
    portable: the graph must run wherever TensorFlow does (SavedModel
      export): TensorFlow's ops.

  Returns:
    True for the fused kernel, False for TensorFlow's ops.

  Raises:
    KernelUnavailableError: ``kernel='fused'`` and it cannot be built.
    ValueError: an unknown ``kernel``.
  """
  if kernel not in KERNELS:
    raise ValueError(
        f'attention_kernel must be one of {KERNELS}, got {kernel!r}.')
  dtype = tf.as_dtype(dtype)
  if (kernel == 'tensorflow' or
      (kernel == 'auto' and dtype not in _AUTO_DTYPES) or
      head_dim > _MAX_HEAD_DIM.get(dtype, 0) or
      kernel_library.placement_obstacle(portable)):
    return False
  try:
    kernel_library.load()
  except KernelUnavailableError as e:
    if kernel == 'fused':
      raise
    kernel_library.warn_once(f'attention_kernel=auto: TensorFlow ops ({e})')
    return False
  return True


def describe(kernel, dtype):
  """Which attention runs, and why: one line for a tool's startup output.

  Args:
    kernel: one of `KERNELS`.
    dtype: what the networks compute in.

  Raises:
    KernelUnavailableError: ``kernel='fused'`` and it cannot be built.
  """
  dtype = tf.as_dtype(dtype)
  if kernel == 'tensorflow':
    return 'TensorFlow ops (requested)'
  if kernel_library.gpu_visible():
    return f'TensorFlow ops ({kernel}: the fused kernel is CPU-only)'
  if kernel == 'auto' and dtype not in _AUTO_DTYPES:
    return f'TensorFlow ops (auto: {dtype.name} networks)'
  try:
    kernel_library.load()
  except KernelUnavailableError as e:
    if kernel == 'fused':
      raise
    return f'TensorFlow ops (auto: {e})'
  return f'fused CPU kernel ({kernel})'
