"""Compiles a tfp_flowpp bijector into local bits-back coding steps.

The flow is walked in its data → latent (``forward``) order and each layer
becomes the `local_bits_back` step that codes it exactly or near the
``−log|det J|`` cost:

================================  ============================================
layer                             coding step
================================  ============================================
`tfb.Chain`                       the children, last element first
splits, `Squeeze`, `tfb.Permute`  `Permutation` (also under `tfb.Invert`)
and their `tfb.Invert`
`LogitPreprocess`, `tfb.NormalCDF`, `Elementwise` on the bijector itself
`tfb.Sigmoid`, any bijector with
``forward_min_event_ndims == 0``
`ActNorm`                         `Elementwise` affine (per channel/element)
`InvertibleConv1x1`               ``P·L·U = P·L·D·V``: exact `UnitTriangular`
                                  shears for ``V`` and ``L``, `Elementwise`
                                  scaling by the diagonal ``D``, a channel
                                  `Permutation` for ``P``
`AdditiveCoupling`                `Coupling` with an exact `Shift`
other `CouplingBijector`s         `Coupling` with `Elementwise` on ``x_b``
`FactorOut`                       `Channels` of the inner flow
================================  ============================================

Network evaluations and the elementwise maps run as `tf.function`s with a
fixed input signature (unknown batch size only), so the compressor and the
decompressor execute the same graphs whatever the order of their calls.
Anything else raises `UnsupportedLayerError` naming the layer.
"""

import math

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
from tensorflow_probability.python.bijectors import chain as chain_lib
from tensorflow_probability.python.bijectors import invert as invert_lib

from tfp_flowpp import bijectors as fb
from tfp_flowpp.bijectors import rearrangement
from tfp_flowpp.compression import local_bits_back as lbb

tfb = tfp.bijectors

__all__ = ['UnsupportedLayerError', 'compile_flow']

# `tfb.Chain(...)` / `tfb.Invert(...)` build private subclasses unless every
# part is a CompositeTensor (see bijectors/conditioning.py).
_CHAIN_TYPES = (chain_lib._Chain,)  # pylint: disable=protected-access
_INVERT_TYPES = (invert_lib._Invert,)  # pylint: disable=protected-access
_PERMUTATIONS = (rearrangement.Rearrangement, tfb.Permute)
_CONDITIONING = frozenset(('context', 'training'))


class UnsupportedLayerError(ValueError):
  """A layer that local bits-back coding here cannot code (one line)."""


def compile_flow(bijector, event_shape, grid, context_shape=None):
  """Returns ``(step, output_shape)`` coding ``bijector.forward``.

  Args:
    bijector: the flow, data → latent (or ε → u for a dequantizer).
    event_shape: ``(H, W, C)`` of its input.
    grid: `CodingGrid`.
    context_shape: event shape of the ``context`` the couplings receive
      (the variational dequantizer's features of x), or None.

  Returns:
    A `local_bits_back.Sequence` and the event shape it outputs.

  Raises:
    UnsupportedLayerError: a layer with no coding step.
  """
  compiler = _Compiler(grid, context_shape)
  step = compiler.compile(bijector, tuple(int(d) for d in event_shape))
  return step, step.output_shape(tuple(event_shape))


def _spec(shape):
  return tf.TensorSpec([None] + list(shape), tf.float64)


class _BijectorTransform:
  """An elementwise bijector (``forward_min_event_ndims == 0``) in float64."""

  def __init__(self, bijector):
    self._bijector = bijector
    spec = tf.TensorSpec(None, tf.float64)
    self._forward = tf.function(self._forward_impl, input_signature=[spec])
    self._inverse = tf.function(self._inverse_impl, input_signature=[spec])

  def _forward_impl(self, x):
    y = self._bijector.forward(x)
    log_derivative = self._bijector.forward_log_det_jacobian(x, event_ndims=0)
    return y, tf.broadcast_to(log_derivative, tf.shape(x))

  def _inverse_impl(self, y):
    x = self._bijector.inverse(y)
    log_derivative = -self._bijector.inverse_log_det_jacobian(y, event_ndims=0)
    return x, tf.broadcast_to(log_derivative, tf.shape(y))

  def forward(self, x):
    y, log_derivative = self._forward(tf.constant(x, tf.float64))
    return y.numpy(), log_derivative.numpy()

  def inverse(self, y):
    x, log_derivative = self._inverse(tf.constant(y, tf.float64))
    return x.numpy(), log_derivative.numpy()


class _AffineTransform:
  """``y = x·scale + shift`` with fixed NumPy parameters (exact IEEE ops)."""

  def __init__(self, scale, shift):
    self.scale = np.asarray(scale, np.float64)
    self.shift = np.asarray(shift, np.float64)
    self.log_scale = np.log(np.abs(self.scale))
    self.inverse_scale = 1. / self.scale

  def forward(self, x):
    return x * self.scale + self.shift, np.broadcast_to(self.log_scale,
                                                        np.shape(x))

  def inverse(self, y):
    return (y - self.shift) * self.inverse_scale, np.broadcast_to(
        self.log_scale, np.shape(y))


class _CouplingFunctions:
  """The graphs of one `CouplingBijector`: parameters, g(x_b), g⁻¹(y_b)."""

  def __init__(self, coupling, context_shape):
    h, w, c = coupling.event_shape
    half = c // 2
    self.half = half
    params_shape = (h, w, half, coupling.params_per_channel)
    self._coupling = coupling
    if context_shape is None:
      self.params = tf.function(
          lambda x_a: coupling._params(x_a, None, False),  # pylint: disable=protected-access
          input_signature=[_spec((h, w, half))])
    else:
      self.params = tf.function(
          lambda x_a, context: coupling._params(x_a, context, False),  # pylint: disable=protected-access
          input_signature=[_spec((h, w, half)), _spec(context_shape)])
    self.forward = tf.function(
        self._forward_impl,
        input_signature=[_spec((h, w, half)),
                         _spec(params_shape)])
    self.inverse = tf.function(
        self._inverse_impl,
        input_signature=[_spec((h, w, half)),
                         _spec(params_shape)])

  def _forward_impl(self, x_b, params):
    with tf.GradientTape() as tape:
      tape.watch(x_b)
      y_b, _ = self._coupling._coupling_forward(x_b, params)  # pylint: disable=protected-access
    derivative = tape.gradient(y_b, x_b)
    return y_b, tf.math.log(tf.abs(derivative))

  def _inverse_impl(self, y_b, params):
    x_b, _ = self._coupling._coupling_inverse(y_b, params)  # pylint: disable=protected-access
    x_b = tf.stop_gradient(x_b)
    return x_b, self._forward_impl(x_b, params)[1]


class _CouplingTransform:
  """The elementwise map of ``x_b`` for fixed coupling parameters."""

  def __init__(self, functions, params):
    self._functions = functions
    self._params = params

  def forward(self, x):
    y, log_derivative = self._functions.forward(
        tf.constant(x, tf.float64), self._params)
    return y.numpy(), log_derivative.numpy()

  def inverse(self, y):
    x, log_derivative = self._functions.inverse(
        tf.constant(y, tf.float64), self._params)
    return x.numpy(), log_derivative.numpy()


class _Compiler:
  """Walks a bijector tree, keeping track of the event shape."""

  def __init__(self, grid, context_shape):
    self.grid = grid
    self.context_shape = context_shape

  def compile(self, bijector, shape):
    steps = []
    for layer in self._leaves(bijector):
      step = self._leaf(layer, shape)
      shape = step.output_shape(shape)
      steps.append(step)
    return lbb.Sequence(steps)

  def _leaves(self, bijector):
    if isinstance(bijector, _CHAIN_TYPES):
      for child in reversed(bijector.bijectors):
        yield from self._leaves(child)
    else:
      yield bijector

  def _leaf(self, layer, shape):
    if isinstance(layer, _PERMUTATIONS) or (
        isinstance(layer, _INVERT_TYPES) and
        isinstance(layer.bijector, _PERMUTATIONS)):
      return self._permutation(layer, shape)
    if isinstance(layer, fb.FactorOut):
      kept = layer.parameters['num_kept_channels'] or shape[-1] // 2
      inner = self.compile(layer.bijector, shape[:-1] + (kept,))
      return lbb.Channels(inner, kept)
    if isinstance(layer, fb.CouplingBijector):
      return self._coupling(layer)
    if isinstance(layer, fb.ActNorm):
      return lbb.Elementwise(
          _AffineTransform(np.exp(layer.log_scale.numpy()),
                           layer.shift.numpy()),
          self.grid,
          name=layer.name)
    if isinstance(layer, fb.InvertibleConv1x1):
      return self._conv1x1(layer, shape)
    if (not isinstance(layer, _INVERT_TYPES + _CHAIN_TYPES) and
        layer.forward_min_event_ndims == 0):
      return lbb.Elementwise(
          _BijectorTransform(layer), self.grid, name=layer.name)
    raise UnsupportedLayerError(
        f'tfp_flowpp.compression cannot code layer {layer.name!r} of type '
        f'{type(layer).__name__}: it is not elementwise, a coupling, a 1x1 '
        'convolution or a permutation.')

  def _permutation(self, layer, shape):
    size = math.prod(shape)
    probe = np.arange(size, dtype=np.float64).reshape((1,) + shape)
    out = layer.forward(tf.constant(probe, tf.float64)).numpy()
    permutation = np.round(out).astype(np.int64).reshape(-1)
    if (not np.array_equal(out.reshape(-1), permutation) or
        not np.array_equal(np.sort(permutation), np.arange(size))):
      raise UnsupportedLayerError(f'Layer {layer.name!r} is not a permutation '
                                  'of its input.')
    return lbb.Permutation(permutation, shape, out.shape[1:], name=layer.name)

  def _coupling(self, coupling):
    extra = set(coupling.conditional_kwarg_names) - _CONDITIONING
    if extra:
      raise UnsupportedLayerError(
          f'Coupling {coupling.name!r} is conditioned on {sorted(extra)}; '
          'conditional (e.g. class-label) models cannot be compressed yet.')
    functions = _CouplingFunctions(coupling, self.context_shape)
    grid, name = self.grid, coupling.name
    additive = isinstance(coupling, fb.AdditiveCoupling)
    with_context = self.context_shape is not None

    def make_step(values_a, context):
      args = [tf.constant(values_a, tf.float64)]
      if with_context:
        args.append(context)
      params = functions.params(*args)
      if additive:
        return lbb.Shift(params[..., 0].numpy(), grid, name=name)
      return lbb.Elementwise(
          _CouplingTransform(functions, params), grid, name=name)

    return lbb.Coupling(make_step, functions.half, grid)

  def _conv1x1(self, conv, shape):
    lower, upper = (m.numpy() for m in conv._factors())  # pylint: disable=protected-access
    permutation = conv._permutation.numpy()  # pylint: disable=protected-access
    groups, n, _ = upper.shape
    diagonal = np.diagonal(upper, axis1=-2, axis2=-1)  # [groups, n]
    unit_upper = upper / diagonal[:, :, np.newaxis]
    # (P v)_i = v_{π(i)} with P[i, π(i)] = 1, per group of n channels.
    source = np.argmax(permutation, axis=-1)  # [groups, n]
    channels = (np.arange(groups)[:, np.newaxis] * n + source).reshape(-1)
    size = math.prod(shape[:-1])
    pixel_perm = (np.arange(size)[:, np.newaxis] * shape[-1] +
                  channels[np.newaxis, :]).reshape(-1)
    return lbb.Sequence([
        lbb.UnitTriangular(
            unit_upper, self.grid, lower=False, name=conv.name + '/V'),
        lbb.Elementwise(
            _AffineTransform(diagonal.reshape(-1), 0.),
            self.grid,
            name=conv.name + '/D'),
        lbb.UnitTriangular(lower, self.grid, lower=True, name=conv.name + '/L'),
        lbb.Permutation(pixel_perm, shape, shape, name=conv.name + '/P'),
    ])
