"""Fused CPU kernels for the elementwise work of the gated residual blocks.

Between its convolutions a Flow++ gated block (`blocks.GatedConvBlock`,
`blocks.GatedAttentionBlock`, `blocks.PointwiseMaxoutBlock`) does only
elementwise work — the concatenated ELU and the gated residual output —

```none
concat_elu(x)      = [elu(x), elu(−x)]               [..., C] → [..., 2C]
gated_residual(x, h) = x + a · σ(b),   [a, b] = h     [..., C], [..., 2C] → [..., C]
```

which TensorFlow runs as 4–6 ops each (under mixed precision: casts to
float32 and back around the ELU and the sigmoid, whose bfloat16 CPU kernels
are slower than that round trip; the negation and concatenation or the
split; the product; the residual add), every one a pass over memory. On a
CPU with fast bfloat16 matrix units (AMX) these passes, not the
convolutions, dominate a training step. The kernels of
``kernels/gated_elementwise.cc`` (built with the other fused kernels,
`kernel_library`) read their inputs once and write their output once,
computing in float32 registers and rounding to the input dtype once, and
their gradients recompute e^{−|x|} and σ(b) from the forward inputs. The
same function as the TensorFlow ops (`layers.concat_elu`, ``x +
layers.gate(h)``) up to float rounding; e^x − 1 is computed without the
cancellation of TensorFlow's ``exp(x) − 1`` near 0.

They are used for bfloat16 networks (``--precision=mixed_bfloat16``, or
``auto`` on a CPU with fast bfloat16) where the fused kernels apply: on a
CPU, outside XLA clusters and SavedModel exports
(`kernel_library.portable_graphs`), when the library builds (else
TensorFlow's ops, with a warning once). float32, float16 and float64
networks use TensorFlow's ops. ``TFP_FLOWPP_FUSED_ELEMENTWISE=0`` in the
environment turns them off (for comparisons; `bench/speed.py` measures
both).
"""

import os

import tensorflow as tf

from tfp_flowpp.networks import kernel_library

__all__ = ['applies', 'describe', 'concat_elu', 'gated_residual']

# The dtypes the kernels are used for. The ops also take float32 (the tests
# check them there), but float32 networks keep TensorFlow's ops: the
# kernels' speed was measured for bfloat16 networks only.
_DTYPES = (tf.bfloat16,)


def _reason_not_used(dtype):
  """Why a gated block traced now uses TensorFlow's ops (None: it does not)."""
  dtype = tf.as_dtype(dtype)
  if dtype not in _DTYPES:
    return f'{dtype.name} networks'
  if os.environ.get('TFP_FLOWPP_FUSED_ELEMENTWISE', '1') == '0':
    return 'TFP_FLOWPP_FUSED_ELEMENTWISE=0'
  obstacle = kernel_library.placement_obstacle()
  if obstacle:
    return obstacle
  try:
    kernel_library.load()
  except kernel_library.KernelUnavailableError as e:
    kernel_library.warn_once(f'Gated blocks: TensorFlow ops ({e})')
    return str(e)
  return None


def applies(dtype):
  """Whether a gated block traced now uses the fused kernels for ``dtype``."""
  return _reason_not_used(dtype) is None


def describe(dtype):
  """Which elementwise ops the gated blocks run, and why: a startup line.

  >>> import tensorflow as tf
  >>> from tfp_flowpp.networks import fused_elementwise
  >>> fused_elementwise.describe(tf.float32)
  'TensorFlow ops (float32 networks)'

  Args:
    dtype: what the networks compute in.
  """
  reason = _reason_not_used(dtype)
  return 'fused CPU kernels' if reason is None else (
      f'TensorFlow ops ({reason})')


def concat_elu(x):
  """``[elu(x), elu(−x)]`` along the last axis, fused; differentiable.

  >>> import numpy as np
  >>> import tensorflow as tf
  >>> from tfp_flowpp.networks import fused_elementwise
  >>> x = tf.constant([[1., -2., 0.]])
  >>> print(np.round(fused_elementwise.concat_elu(x).numpy(), 4))
  [[ 1.     -0.8647  0.     -0.6321  2.     -0.    ]]

  Args:
    x: ``[..., C]`` tensor of bfloat16 or float32.

  Returns:
    ``[..., 2C]`` in ``x``'s dtype.

  Raises:
    KernelUnavailableError: the kernels cannot be built here.
  """
  return kernel_library.load().flowpp_concat_elu(x)


def gated_residual(x, h):
  """``x + a · σ(b)`` with ``[a, b] = h`` split along channels, fused.

  >>> import numpy as np
  >>> import tensorflow as tf
  >>> from tfp_flowpp.networks import fused_elementwise
  >>> x = tf.constant([[1., 1.]])
  >>> h = tf.constant([[2., -1., 0., 3.]])
  >>> print(np.round(fused_elementwise.gated_residual(x, h).numpy(), 4))
  [[2.     0.0474]]

  Args:
    x: ``[..., C]`` tensor of bfloat16 or float32 (the residual stream).
    h: ``[..., 2C]`` tensor of ``x``'s dtype (the gate's input).

  Returns:
    ``[..., C]`` in ``x``'s dtype; differentiable in both inputs.

  Raises:
    KernelUnavailableError: the kernels cannot be built here.
  """
  return kernel_library.load().flowpp_gated_residual(x, h)
