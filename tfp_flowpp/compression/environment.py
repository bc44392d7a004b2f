"""What the bit-exactness of the coding path depends on, and its settings.

The coder and the decoder must evaluate the float64 model to the same bits.
On one machine that holds when both run the same software, the same number
of intra-op threads (Eigen splits reductions by thread) and TensorFlow's
deterministic kernels (`tf.config.experimental.enable_op_determinism`).
`describe` lists those facts (and the CPU's vector ISA, which decides the
code paths of exp/log); its hash is stored in every compressed file so that
a different environment is detected before decoding.

Op determinism is switched on only while coding (`deterministic`): left on,
it would make every unseeded random op of the rest of the program raise.

What is guaranteed:

* **Same machine, same software, same thread count** (what the file
  records): decoding reproduces every pixel. Tested in fresh processes;
  measured on the quickstart model, the payload is also byte-identical with
  1 and 2 intra-op threads (the count is stored and restored anyway, since
  Eigen may split larger reductions by thread).
* **Another machine**: expected to work with the same TensorFlow, TFP,
  constriction and NumPy versions and the same CPU vector ISA (float64
  kernels then run the same instructions), but not guaranteed — float64
  results can differ in the last bit between ISAs or library versions,
  and one different bit desynchronises the coder.
* **Never a silently wrong image**: a different environment is named in the
  error, and a desynchronised decode is caught by the pixel-range check, the
  check that the stream ends exactly at the last image, and the pixels'
  CRC-32 in the header (a wrong image would have to pass all three).
"""

import contextlib
import hashlib
import os
import platform

import constriction
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
from tensorflow.python.framework import config as tf_config

__all__ = [
    'configure', 'deterministic', 'describe', 'fingerprint', 'intra_op_threads'
]


def intra_op_threads():
  """The intra-op thread count TensorFlow uses (0 = "automatic" resolved)."""
  threads = tf.config.threading.get_intra_op_parallelism_threads()
  if threads:
    return int(threads)
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:  # Not Linux.
    return os.cpu_count() or 1


@contextlib.contextmanager
def deterministic():
  """TensorFlow's deterministic kernels inside the block (then as before)."""
  was_enabled = tf_config.is_op_determinism_enabled()
  tf.config.experimental.enable_op_determinism()
  try:
    yield
  finally:
    if not was_enabled:
      tf_config.disable_op_determinism()


def configure(threads=None):
  """Sets the intra-op thread count, if given and still possible.

  Args:
    threads: intra-op threads to use, or None to keep TensorFlow's.

  Raises:
    ValueError: TensorFlow is already initialised with another count.
  """
  if threads is None or int(threads) == intra_op_threads():
    return
  try:
    tf.config.threading.set_intra_op_parallelism_threads(int(threads))
  except RuntimeError as e:
    raise ValueError(
        f'TensorFlow already runs with {intra_op_threads()} intra-op '
        f'threads but {threads} are needed; call tf.config.threading.'
        f'set_intra_op_parallelism_threads({threads}) before using '
        'TensorFlow.') from e


def _vector_isa():
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('flags'):
          flags = set(line.split(':', 1)[1].split())
          for isa in ('avx512f', 'avx2', 'avx', 'sse4_2'):
            if isa in flags:
              return isa
          return 'baseline'
  except OSError:
    pass
  return platform.processor() or 'unknown'


def describe():
  """A one-line description of the coding environment."""
  return (f'tensorflow {tf.__version__}, tfp {tfp.__version__}, '
          f'constriction {_constriction_version()}, numpy {np.__version__}, '
          f'{intra_op_threads()} intra-op threads, '
          f'oneDNN {os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default")}, '
          f'{platform.machine()}/{_vector_isa()}')


def fingerprint():
  """4-byte hash of `describe`."""
  return hashlib.sha256(describe().encode()).digest()[:4]


def _constriction_version():
  try:
    from importlib import metadata  # pylint: disable=g-import-not-at-top
    return metadata.version('constriction')
  except Exception:  # pylint: disable=broad-except
    return getattr(constriction, '__version__', 'unknown')
