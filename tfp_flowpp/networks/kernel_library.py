"""The fused CPU kernels: one op library, compiled on first use, and where it runs.

The C++ sources in ``kernels/`` — the fused attention
(``self_attention.cc``, used by `fused_attention`) and the fused
elementwise work of the gated blocks (``gated_elementwise.cc``, used by
`fused_elementwise`), sharing ``simd_math.h`` — are compiled together with
the system's C++ compiler (``$CXX`` or ``g++``) against the installed
TensorFlow's headers, for this CPU (``-march=native``), the first time a
kernel is needed, into a cache directory (``$TFP_FLOWPP_KERNEL_CACHE``,
else ``$XDG_CACHE_HOME/tfp_flowpp``, else ``~/.cache/tfp_flowpp``). The
file name is a hash of the sources, the compiler, the flags, TensorFlow's
version and the CPU, so a shared home directory serves different machines.
About 15 s, once. A build that fails leaves a one-line ``.failed`` note
under the same hash, so later processes report the same error at once
instead of compiling again (any change of source, compiler, flags,
TensorFlow or CPU is a new hash and a new attempt).

The kernels are speed-ups of functions TensorFlow's ops also compute; the
models choose them only where they apply: on CPUs (no GPU visible),
outside XLA clusters (`in_xla_context`) and outside graphs that are saved
to run elsewhere (`portable_graphs`, the SavedModel export).

``python -m tfp_flowpp.networks.kernel_library`` builds the library now
(e.g. in a container image) and says where it is.
"""

import contextlib
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading

from absl import logging
import tensorflow as tf

__all__ = [
    'KernelUnavailableError', 'load', 'portable_graphs', 'in_portable_graph',
    'in_xla_context', 'gpu_visible', 'placement_obstacle', 'warn_once'
]

_KERNELS_DIR = os.path.join(os.path.dirname(__file__), 'kernels')
# Compiled into one library (one file per process, see `load`).
_SOURCES = tuple(
    os.path.join(_KERNELS_DIR, name)
    for name in ('self_attention.cc', 'gated_elementwise.cc'))
# Included by the sources: part of the cache key.
_HEADERS = (os.path.join(_KERNELS_DIR, 'simd_math.h'),)


class KernelUnavailableError(ValueError):
  """The fused kernels cannot be built or loaded here (one-line reason)."""


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


@functools.lru_cache(maxsize=None)
def _accepts(compiler, flag):
  """Whether ``compiler`` knows the command-line option ``flag``."""
  try:
    return subprocess.run(
        [compiler, flag, '-x', 'c++', '-E', '-o', os.devnull, os.devnull],
        capture_output=True,
        timeout=60).returncode == 0
  except (OSError, subprocess.SubprocessError):
    return False


def _compile_command(compiler, output):
  # The kernels use no float16 arithmetic, and with AVX512-FP16 enabled
  # (-march=native on a Sapphire Rapids-class Xeon) the Eigen headers of TF 2.21
  # do not compile with GCC 12 (PacketMathFP16.h: "expected initializer
  # before '<' token"); compilers that predate the option never enable it.
  no_fp16 = (['-mno-avx512fp16'] if _accepts(compiler, '-mno-avx512fp16')
             else [])
  return ([compiler, '-O3', '-march=native'] + no_fp16 +
          ['-shared', '-fPIC', '-w'] + tf.sysconfig.get_compile_flags() +
          list(_SOURCES) + ['-o', output] + tf.sysconfig.get_link_flags())


def _one_line(text, limit=300):
  return ' '.join(text.split())[-limit:]


@functools.lru_cache(maxsize=None)
def load():
  """The compiled op library (built into the cache directory if needed).

  Returns:
    The module `tf.load_op_library` returns (``flowpp_self_attention``,
    ``flowpp_concat_elu``, ``flowpp_gated_residual`` and their gradient
    ops); the gradients are registered. A process loads one file: after
    the first, a call (say with another cache directory) still builds the
    file if it is missing but returns the module already loaded.

  Raises:
    KernelUnavailableError: no compiler, a failed compilation (now or
      recorded by an earlier process for the same sources, compiler,
      flags, TensorFlow and CPU) or a failed load; the message says which,
      in one line.
  """
  compiler = os.environ.get('CXX') or 'g++'
  if shutil.which(compiler) is None:
    raise KernelUnavailableError(
        f'no C++ compiler {compiler!r} on PATH to build the fused CPU '
        'kernels (install g++ or set CXX)')
  try:
    version = subprocess.run([compiler, '--version'],
                             capture_output=True,
                             text=True,
                             check=True,
                             timeout=60).stdout
    sources = []
    for path in _SOURCES + _HEADERS:
      with open(path, 'rb') as f:
        sources.append(f.read())
  except (OSError, subprocess.SubprocessError) as e:
    raise KernelUnavailableError(
        f'cannot run {compiler} or read the kernel sources: {e}') from e
  key = hashlib.sha256()
  for part in sources + [
      version.encode(),
      tf.__version__.encode(), ' '.join(_compile_command(compiler,
                                                         '')).encode(),
      _cpu_identity().encode()
  ]:
    key.update(part + b'\0')
  directory = _cache_dir()
  path = os.path.join(directory, f'fused_kernels-{key.hexdigest()[:16]}.so')
  failed = path[:-len('.so')] + '.failed'
  if not os.path.exists(path):
    if os.path.exists(failed):
      with open(failed) as f:
        raise KernelUnavailableError(f.read().strip() + f' (recorded in {failed};'
                                     ' delete it to retry)')
    _build(compiler, directory, path, failed)
  if _LIBRARY[0] is not None:
    # One file per process: TensorFlow would hold a second file's kernels as
    # duplicate registrations of the same op and refuse to run it in graphs.
    return _LIBRARY[0]
  try:
    library = tf.load_op_library(path)
  except (tf.errors.NotFoundError, OSError) as e:
    raise KernelUnavailableError(
        f'cannot load the fused CPU kernels {path}: '
        f'{str(e).splitlines()[0]}') from e
  _LIBRARY[0] = library
  for op_type, gradient in _GRADIENTS.items():
    tf.RegisterGradient(op_type)(gradient)
  return library


def _build(compiler, directory, path, failed):
  """Compiles the library into ``path`` (atomically); notes a failure."""
  try:
    os.makedirs(directory, exist_ok=True)
    fd, partial = tempfile.mkstemp(
        suffix='.so.partial', prefix='fused_kernels-', dir=directory)
    os.close(fd)
  except OSError as e:
    raise KernelUnavailableError(
        f'cannot write the fused CPU kernels to {directory}: {e}') from e
  logging.info('Compiling the fused CPU kernels into %s', path)
  try:
    try:
      result = subprocess.run(
          _compile_command(compiler, partial),
          capture_output=True,
          text=True,
          timeout=600)
    except (OSError, subprocess.SubprocessError) as e:
      # A timeout or a crash of the compiler itself: not recorded, the next
      # process tries again.
      raise KernelUnavailableError(
          f'{compiler} failed to build the fused CPU kernels: {e}') from e
    if result.returncode:
      errors = [line for line in result.stderr.splitlines() if 'error' in line]
      message = (f'{compiler} failed to build the fused CPU kernels: ' +
                 (errors[0].strip() if errors else _one_line(result.stderr)))
      try:
        with open(failed, 'w') as f:
          f.write(message + '\n')
      except OSError:
        pass
      raise KernelUnavailableError(message)
    os.replace(partial, path)  # Atomic: never a half-written library.
  finally:
    if os.path.exists(partial):
      os.remove(partial)


# [the library loaded in this process (the gradients call it)]
_LIBRARY = [None]


def _self_attention_gradient(op, grad_output, unused_grad_log_normalizer):
  return _LIBRARY[0].flowpp_self_attention_grad(
      op.inputs[0], op.outputs[1], grad_output, heads=op.get_attr('heads'))


def _concat_elu_gradient(op, grad_y):
  return _LIBRARY[0].flowpp_concat_elu_grad(op.inputs[0], grad_y)


def _gated_residual_gradient(op, grad_y):
  return grad_y, _LIBRARY[0].flowpp_gated_residual_grad(op.inputs[1], grad_y)


_GRADIENTS = {
    'FlowppSelfAttention': _self_attention_gradient,
    'FlowppConcatElu': _concat_elu_gradient,
    'FlowppGatedResidual': _gated_residual_gradient,
}


_TRACING = threading.local()


@contextlib.contextmanager
def portable_graphs():
  """Graphs traced inside hold no fused kernel: they run wherever TF runs.

  For graphs that are saved (`export.export_saved_model`), which must run
  wherever TensorFlow (or TF Serving) runs: the fused kernels are custom
  ops compiled on this machine. `blocks.portable_attention` is this
  context (it also leaves out the attention's hand-written gradient).
  """
  depth = getattr(_TRACING, 'portable', 0)
  _TRACING.portable = depth + 1
  try:
    yield
  finally:
    _TRACING.portable = depth


def in_portable_graph():
  """Whether a graph traced now is inside `portable_graphs`."""
  return bool(getattr(_TRACING, 'portable', 0))


def in_xla_context():
  """Whether ops created now land in an XLA cluster (no custom-op lowering).

  True inside a ``tf.function(jit_compile=True)`` graph or one nested in it.
  """
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
def gpu_visible():
  """Whether TensorFlow sees a GPU (the kernels are CPU-only)."""
  return bool(tf.config.list_logical_devices('GPU'))


def placement_obstacle(portable=False):
  """Why a fused kernel traced now would not run where its graph runs.

  Args:
    portable: the caller's graph must run wherever TensorFlow does (as
      inside `portable_graphs`).

  Returns:
    A short reason — a visible GPU (the kernels are CPU-only), a portable
    graph, an XLA cluster — or None: the kernels apply if they build.
  """
  if gpu_visible():
    return 'the fused kernels are CPU-only'
  if portable or in_portable_graph():
    return 'a portable graph'
  if in_xla_context():
    return 'an XLA cluster'
  return None


_WARNED = set()


def warn_once(message):
  """Logs ``message`` as a warning the first time this process sees it."""
  if message not in _WARNED:
    _WARNED.add(message)
    logging.warning('%s', message)


if __name__ == '__main__':
  # python -m tfp_flowpp.networks.kernel_library: build the kernels now.
  load()
  print(f'fused CPU kernels built in {_cache_dir()}')
