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

The kernel is compiled with the system's C++ compiler (``$CXX`` or
``g++``) against the installed TensorFlow's headers, for this CPU
(``-march=native``), the first time it is needed, into a cache directory
(``$TFP_FLOWPP_KERNEL_CACHE``, else ``$XDG_CACHE_HOME/tfp_flowpp``, else
``~/.cache/tfp_flowpp``); the file name is a hash of the source, the
compiler, the flags, TensorFlow's version and the CPU, so a shared home
directory serves different machines. About 10 s, once.

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
SavedModel exports (`blocks.portable_attention`), which keep
TensorFlow's ops so a SavedModel runs wherever TensorFlow (or TF Serving)
does. Both paths compute the same function; they differ by float rounding.
"""

import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile

from absl import logging
import tensorflow as tf

__all__ = [
    'KERNELS', 'KernelUnavailableError', 'load', 'self_attention',
    'uses_fused_kernel', 'describe'
]

KERNELS = ('auto', 'fused', 'tensorflow')

_SOURCE = os.path.join(os.path.dirname(__file__), 'kernels',
                       'self_attention.cc')
# What `auto` uses the kernel for: 16-bit networks (see the module docstring).
_AUTO_DTYPES = (tf.bfloat16, tf.float16)
# Input dtype -> the largest head dimension the kernel takes (four 64-byte
# vectors of its accumulation dtype: float64 for float64, else float32).
_MAX_HEAD_DIM = {tf.float32: 64, tf.bfloat16: 64, tf.float16: 64,
                 tf.float64: 32}


class KernelUnavailableError(ValueError):
  """The fused kernel cannot be built or loaded here (one-line reason)."""


def _cache_dir():
  if os.environ.get('TFP_FLOWPP_KERNEL_CACHE'):
    return os.environ['TFP_FLOWPP_KERNEL_CACHE']
  base = os.environ.get('XDG_CACHE_HOME') or os.path.join(
      os.path.expanduser('~'), '.cache')
  return os.path.join(base, 'tfp_flowpp')


def _cpu_identity():
  """The CPU's model name and flags (what ``-march=native`` compiles for)."""
  fields = {}
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        key, _, value = line.partition(':')
        key = key.strip()
        if key in ('model name', 'flags') and key not in fields:
          fields[key] = value.strip()
        if len(fields) == 2:
          break
  except OSError:
    pass
  return f'{platform.machine()} {fields.get("model name", "")} ' + (
      fields.get('flags', ''))


def _compile_command(compiler, output):
  return ([compiler, '-O3', '-march=native', '-shared', '-fPIC', '-w'] +
          tf.sysconfig.get_compile_flags() + [_SOURCE, '-o', output] +
          tf.sysconfig.get_link_flags())


@functools.lru_cache(maxsize=None)
def load():
  """The compiled op library (built into the cache directory if needed).

  Returns:
    The module `tf.load_op_library` returns, with ``flowpp_self_attention``
    and ``flowpp_self_attention_grad``; the gradient is registered. A
    process loads one file: after the first, a call (say with another
    cache directory) still builds the file if it is missing but returns
    the module already loaded.

  Raises:
    KernelUnavailableError: no compiler, a failed compilation or load (the
      message says which, in one line).
  """
  compiler = os.environ.get('CXX') or 'g++'
  if shutil.which(compiler) is None:
    raise KernelUnavailableError(
        f'no C++ compiler {compiler!r} on PATH to build the fused attention '
        'kernel (install g++ or set CXX)')
  try:
    version = subprocess.run([compiler, '--version'],
                             capture_output=True,
                             text=True,
                             check=True,
                             timeout=60).stdout
    with open(_SOURCE, 'rb') as f:
      source = f.read()
  except (OSError, subprocess.SubprocessError) as e:
    raise KernelUnavailableError(
        f'cannot run {compiler} or read {_SOURCE}: {e}') from e
  key = hashlib.sha256()
  for part in (source, version.encode(), tf.__version__.encode(),
               ' '.join(_compile_command(compiler, '')).encode(),
               _cpu_identity().encode()):
    key.update(part + b'\0')
  directory = _cache_dir()
  path = os.path.join(directory, f'self_attention-{key.hexdigest()[:16]}.so')
  if not os.path.exists(path):
    try:
      os.makedirs(directory, exist_ok=True)
      fd, partial = tempfile.mkstemp(
          suffix='.so.partial', prefix='self_attention-', dir=directory)
      os.close(fd)
    except OSError as e:
      raise KernelUnavailableError(
          f'cannot write the fused attention kernel to {directory}: {e}') from e
    logging.info('Compiling the fused attention kernel into %s', path)
    try:
      result = subprocess.run(
          _compile_command(compiler, partial),
          capture_output=True,
          text=True,
          timeout=600)
      if result.returncode:
        errors = [
            line for line in result.stderr.splitlines() if 'error' in line
        ]
        raise KernelUnavailableError(
            f'{compiler} failed to build the fused attention kernel: ' +
            (errors[0].strip() if errors else
             ' '.join(result.stderr.split())[-300:]))
      os.replace(partial, path)  # Atomic: never a half-written library.
    except (OSError, subprocess.SubprocessError) as e:
      raise KernelUnavailableError(
          f'{compiler} failed to build the fused attention kernel: {e}') from e
    finally:
      if os.path.exists(partial):
        os.remove(partial)
  if _LIBRARY[0] is not None:
    # One file per process: TensorFlow would hold a second file's kernels as
    # duplicate registrations of the same op and refuse to run it in graphs.
    return _LIBRARY[0]
  try:
    library = tf.load_op_library(path)
  except (tf.errors.NotFoundError, OSError) as e:
    raise KernelUnavailableError(
        f'cannot load the fused attention kernel {path}: '
        f'{str(e).splitlines()[0]}') from e
  _LIBRARY[0] = library
  tf.RegisterGradient('FlowppSelfAttention')(_gradient)
  return library


# [the library loaded in this process (the gradient calls it)]
_LIBRARY = [None]


def _gradient(op, grad_output, unused_grad_log_normalizer):
  return _LIBRARY[0].flowpp_self_attention_grad(
      op.inputs[0], op.outputs[1], grad_output, heads=op.get_attr('heads'))


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
  output, _ = load().flowpp_self_attention(qkv, heads=heads, A=accumulate)
  return output


def _in_xla_context():
  # A `tf.function(jit_compile=True)` graph (or one nested in it): custom
  # ops have no XLA lowering.
  from tensorflow.python.ops import control_flow_util  # pylint: disable=g-import-not-at-top,g-direct-tensorflow-import
  graph = tf.compat.v1.get_default_graph()
  if control_flow_util.GraphOrParentsInXlaContext(graph):
    return True
  while graph is not None:
    if getattr(graph, '_jit_compile', False) or 'jit_compile=True' in str(
        getattr(graph, 'name', '')):
      return True
    graph = getattr(graph, 'outer_graph', None)
  return False


@functools.lru_cache(maxsize=None)
def _gpu_visible():
  return bool(tf.config.list_logical_devices('GPU'))


_WARNED = set()


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
  if (kernel == 'tensorflow' or portable or
      (kernel == 'auto' and dtype not in _AUTO_DTYPES) or
      head_dim > _MAX_HEAD_DIM.get(dtype, 0) or _gpu_visible() or
      _in_xla_context()):
    return False
  try:
    load()
  except KernelUnavailableError as e:
    if kernel == 'fused':
      raise
    if str(e) not in _WARNED:
      _WARNED.add(str(e))
      logging.warning('attention_kernel=auto: TensorFlow ops (%s)', e)
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
  if _gpu_visible():
    return f'TensorFlow ops ({kernel}: the fused kernel is CPU-only)'
  if kernel == 'auto' and dtype not in _AUTO_DTYPES:
    return f'TensorFlow ops (auto: {dtype.name} networks)'
  try:
    load()
  except KernelUnavailableError as e:
    if kernel == 'fused':
      raise
    return f'TensorFlow ops (auto: {e})'
  return f'fused CPU kernel ({kernel})'


if __name__ == '__main__':
  # python -m tfp_flowpp.networks.fused_attention: build the kernel now
  # (e.g. in a container image) and say where it is.
  print(f'{describe("fused", tf.float32)}, built in {_cache_dir()}')
