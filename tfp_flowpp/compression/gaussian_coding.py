"""Grid values coded under discretized Gaussians with `constriction`'s ANS.

Every continuous quantity on the coding path lives on a grid: the integer
``k`` stands for the bin ``[k·δ, (k+1)·δ)`` (value ``(k + ½)·δ``). This module
codes such integers, vectorised over arrays, under ``N(mean, std²)``
discretized to the bins (``mean``, ``std`` given in bin units), on
`constriction.stream.stack.AnsCoder` (32-bit words, 24-bit probabilities).

24 bits of probability resolution cannot hold a Gaussian that spans 2^20
bins, so a wide Gaussian is coded in two parts: a *coarse* index
``h = k >> e`` under a `QuantizedGaussian` of the coarse cells (standard
deviation ``std / 2^e`` ∈ [64, 128) cells) and the ``e`` *fine* bits under a
uniform model. Within one coarse cell the density varies by less than
``exp(1/64)``, so this costs ~1e-5 bits per symbol over exact coding.

The coarse index is coded relative to the integer nearest the mean,
``j = h − round(mean)``, in a window ``|j| ≤ W`` of about 6.5-7.7 coarse
standard deviations (``W`` is fixed per quarter-octave of the standard
deviation, so one `QuantizedGaussian` family serves each bucket).
`constriction` gives every symbol of a window at least 2^-24 of
probability; a wider window would let bits-back draws land absurdly far in
the tails, where that floor is far above the Gaussian's mass and the draw
costs far more later than it returned. Two variants:

* `decode_bounded` / `encode_bounded`: ``j`` stays in the window (and, with
  ``limits``, ``k`` stays in a given range). For values that are *drawn*
  from the stream (bits-back) and later re-encoded by the other side.
* `encode_escapable` / `decode_escapable`: any int64 ``k``; a ``j`` outside
  the window is sent as an escape symbol (probability ~2^-24) followed by
  its distance in Elias-gamma style. For data whose distance from the mean
  is not under our control (the flow's latents, the inputs of a layer).

Each encode is the exact inverse of the matching decode: decoding then
encoding the same values with the same parameters restores the coder's
state bit for bit, and vice versa — the property bits-back coding needs.
Parameters must be identical on both sides; nothing here rounds them.
"""

import constriction
import numpy as np

__all__ = [
    'CodingError', 'decode_bounded', 'encode_bounded',
    'decode_escapable', 'encode_escapable', 'decode_uniform',
    'encode_uniform', 'decode_uniform_sizes', 'encode_uniform_sizes',
    'decode_geometric', 'encode_geometric', 'decode_bits', 'encode_bits'
]

_COARSE_STD_LOG2 = 6  # Coarse standard deviations lie in [64, 128).
_WINDOW_STDS = 6.5
_MIN_BUCKET = -4  # Quarter-octaves of the coarse std; below 2^-1 one window.
_MAX_BUCKET = 4 * (_COARSE_STD_LOG2 + 1) - 1
_CHUNK_BITS = 16
_MIN_STD = 2.**-20  # In bins; a narrower Gaussian codes like a point mass.
_MAX_FINE_BITS = 56

_model = constriction.stream.model
_UNIFORM = _model.Uniform()
_BIT_LENGTH = _model.Uniform(64)


class CodingError(ValueError):
  """Values or parameters that cannot be coded (one-line message)."""


# Fine bits -------------------------------------------------------------------


def encode_bits(coder, values, num_bits):
  """Pushes the low ``num_bits[i]`` bits of ``values[i]`` (uniform code)."""
  values = np.asarray(values, np.int64).ravel()
  num_bits = np.asarray(num_bits, np.int64).ravel()
  chunks = int(-(-num_bits.max() // _CHUNK_BITS)) if num_bits.size else 0
  for i in reversed(range(chunks)):
    bits = np.clip(num_bits - i * _CHUNK_BITS, 0, _CHUNK_BITS)
    active = bits > 0
    if not active.any():
      continue
    chunk = (values[active] >> (i * _CHUNK_BITS)) & ((1 << bits[active]) - 1)
    coder.encode_reverse(
        chunk.astype(np.int32), _UNIFORM, (1 << bits[active]).astype(np.int32))


def decode_bits(coder, num_bits):
  """Pops what `encode_bits` pushed; returns non-negative int64 values."""
  num_bits = np.asarray(num_bits, np.int64).ravel()
  values = np.zeros(num_bits.shape, np.int64)
  chunks = int(-(-num_bits.max() // _CHUNK_BITS)) if num_bits.size else 0
  for i in range(chunks):
    bits = np.clip(num_bits - i * _CHUNK_BITS, 0, _CHUNK_BITS)
    active = bits > 0
    if not active.any():
      continue
    chunk = coder.decode(_UNIFORM, (1 << bits[active]).astype(np.int32))
    values[active] |= chunk.astype(np.int64) << (i * _CHUNK_BITS)
  return values


def encode_uniform(coder, values, size):
  """Pushes integers ``0 ≤ values < size`` (2 ≤ size ≤ 2^24) uniformly."""
  values = np.asarray(values).ravel()
  if values.size:
    coder.encode_reverse(values.astype(np.int32), _model.Uniform(int(size)))


def decode_uniform(coder, count, size):
  """Pops ``count`` integers pushed by `encode_uniform`."""
  if not count:
    return np.zeros([0], np.int64)
  return coder.decode(_model.Uniform(int(size)), int(count)).astype(np.int64)


def _encode_distances(coder, distance):
  """Pushes escape distances ``≥ 0``: their exact bit lengths, then bits."""
  length, rest = np.zeros(distance.shape, np.int64), distance.copy()
  while rest.any():  # Exact bit lengths (escapes are rare).
    length += rest > 0
    rest >>= 1
  encode_bits(coder, distance, length)
  coder.encode_reverse(length.astype(np.int32), _BIT_LENGTH)


def _decode_distances(coder, count):
  """Pops ``count`` distances pushed by `_encode_distances`."""
  length = coder.decode(_BIT_LENGTH, int(count)).astype(np.int64)
  return decode_bits(coder, length)


# constriction's Uniform quantises probabilities to 2^-24: sizes up to 2^16
# cost log2(size) within 0.006 bits (near 2^24 up to 1 bit more).
_UNIFORM_BITS = 16


def encode_uniform_sizes(coder, values, sizes):
  """Pushes ``0 ≤ values[i] < sizes[i]`` uniformly (sizes up to 2^62).

  A size above 2^16 is coded in two parts: ``values >> 16`` uniformly among
  ``⌈size / 2^16⌉`` (recursively), then the low part among what that high
  part leaves; the cost is ``log2(size)`` bits within 0.006.
  """
  values = np.asarray(values, np.int64).ravel()
  sizes = np.asarray(sizes, np.int64).ravel()
  if np.any(sizes < 1) or np.any((values < 0) | (values >= sizes)):
    raise CodingError('A uniform value is outside its range.')
  high, low_sizes = _uniform_parts(values, sizes)
  low = values - (high << _UNIFORM_BITS)
  _encode_uniform_parts(coder, low, low_sizes)
  big = sizes > (1 << _UNIFORM_BITS)
  if big.any():
    encode_uniform_sizes(coder, high[big],
                         -(-sizes[big] >> _UNIFORM_BITS))


def decode_uniform_sizes(coder, sizes):
  """Pops what `encode_uniform_sizes` pushed with these sizes."""
  sizes = np.asarray(sizes, np.int64).ravel()
  high = np.zeros(sizes.shape, np.int64)
  big = sizes > (1 << _UNIFORM_BITS)
  if big.any():
    high[big] = decode_uniform_sizes(coder, -(-sizes[big] >> _UNIFORM_BITS))
  _, low_sizes = _uniform_parts(high << _UNIFORM_BITS, sizes)
  return (high << _UNIFORM_BITS) + _decode_uniform_parts(coder, low_sizes)


def _uniform_parts(values, sizes):
  high = np.where(sizes > (1 << _UNIFORM_BITS), values >> _UNIFORM_BITS, 0)
  low_sizes = np.minimum(sizes - (high << _UNIFORM_BITS), 1 << _UNIFORM_BITS)
  return high, low_sizes


def _encode_uniform_parts(coder, values, sizes):
  coded = sizes > 1
  if coded.any():
    coder.encode_reverse(values[coded].astype(np.int32), _UNIFORM,
                         sizes[coded].astype(np.int32))


def _decode_uniform_parts(coder, sizes):
  values = np.zeros(sizes.shape, np.int64)
  coded = sizes > 1
  if coded.any():
    values[coded] = coder.decode(_UNIFORM, sizes[coded].astype(np.int32))
  return values


_GEOMETRIC_MEANS = 12  # Coarse window of a geometric code, in means.
_GEOMETRIC_FAMILIES = {}


def _geometric_split(mean):
  """``(fine bits, coarse mean, window)`` of a geometric code (bin units)."""
  mean = float(mean)
  if not (np.isfinite(mean) and mean > 0):
    raise CodingError(f'A geometric code needs a positive mean, got {mean}.')
  fine_bits = int(np.clip(np.frexp(mean)[1] - 1 - _COARSE_STD_LOG2, 0,
                          _MAX_FINE_BITS))
  coarse_mean = mean / 2.**fine_bits
  window = int(np.ceil(_GEOMETRIC_MEANS * coarse_mean))
  if coarse_mean not in _GEOMETRIC_FAMILIES:
    decay = np.exp(-1. / coarse_mean)
    p = decay**np.arange(window + 1, dtype=np.float64)
    p[-1] /= 1. - decay  # The escape symbol holds the whole tail.
    _GEOMETRIC_FAMILIES[coarse_mean] = _model.Categorical(p, perfect=False)
  return fine_bits, _GEOMETRIC_FAMILIES[coarse_mean], window


def encode_geometric(coder, values, mean):
  """Pushes int64 ``values ≥ 0`` under a geometric law of ``mean`` bins.

  The coarse index ``values >> e`` (coarse mean in [64, 128) cells) is
  coded with exact geometric probabilities up to 12 means, beyond which an
  escape symbol and an Elias-gamma distance follow; the ``e`` fine bits are
  uniform. For one-sided tails whose log-density falls linearly.
  """
  values = np.asarray(values, np.int64).ravel()
  if np.any(values < 0):
    raise CodingError('A geometric value is negative.')
  fine_bits, family, window = _geometric_split(mean)
  coarse = values >> fine_bits
  encode_bits(coder, values - (coarse << fine_bits),
              np.full(values.shape, fine_bits))
  escaped = coarse >= window
  if escaped.any():
    _encode_distances(coder, coarse[escaped] - window)
  coder.encode_reverse(np.minimum(coarse, window).astype(np.int32), family)


def decode_geometric(coder, count, mean):
  """Pops ``count`` values pushed by `encode_geometric` with ``mean``."""
  fine_bits, family, window = _geometric_split(mean)
  coarse = coder.decode(family, int(count)).astype(np.int64)
  escaped = coarse == window
  if escaped.any():
    coarse[escaped] = window + _decode_distances(coder, escaped.sum())
  fine = decode_bits(coder, np.full(coarse.shape, fine_bits))
  return (coarse << fine_bits) + fine


# Gaussian parameters -----------------------------------------------------------


def _window(bucket):
  """Half-width of the coarse window for a quarter-octave ``bucket``."""
  return max(8, int(np.ceil(_WINDOW_STDS * 2.**((bucket + 1) / 4.))))


_FAMILIES = {}


def _family(bucket, escapable):
  key = (bucket, escapable)
  if key not in _FAMILIES:
    width = _window(bucket) + int(escapable)
    _FAMILIES[key] = _model.QuantizedGaussian(-width, width)
  return _FAMILIES[key]


class _Split:
  """Coarse/fine split and window of discretized Gaussians (bin units)."""

  def __init__(self, mean, std, limits=None):
    mean = np.asarray(mean, np.float64).ravel()
    std = np.asarray(std, np.float64).ravel()
    if mean.shape != std.shape:
      raise CodingError(f'{mean.size} means for {std.size} standard '
                        'deviations.')
    if not (np.isfinite(mean).all() and np.isfinite(std).all()):
      raise CodingError('Non-finite Gaussian parameters on the coding path '
                        '(the model produced NaN or inf).')
    if np.abs(mean).max(initial=0.) >= 2.**61:
      raise CodingError('A value on the coding path is too far from zero to '
                        'be represented on the grid (|mean| ≥ 2^61 bins).')
    std = np.maximum(std, _MIN_STD)
    # floor(log2(std)) exactly: frexp gives std = m·2^x with m ∈ [0.5, 1).
    exponent = np.frexp(std)[1].astype(np.int64) - 1
    self.fine_bits = np.clip(exponent - _COARSE_STD_LOG2, 0, _MAX_FINE_BITS)
    scale = np.ldexp(1., self.fine_bits)  # 2^e, exact.
    # Coarse cell h holds k ∈ [h·2^e, (h+1)·2^e); in coarse units the bin of
    # h is [h − ½, h + ½) and the Gaussian has mean (mean + ½)/2^e − ½.
    coarse_mean = (mean + 0.5) / scale - 0.5
    self.std = std / scale
    self.bucket = np.clip(
        np.floor(4. * np.log2(self.std)).astype(np.int64), _MIN_BUCKET,
        _MAX_BUCKET)
    self.buckets = np.unique(self.bucket)
    self.width = np.array([_window(b) for b in range(_MIN_BUCKET,
                                                    _MAX_BUCKET + 1)],
                          np.int64)[self.bucket - _MIN_BUCKET]
    self.center = np.floor(coarse_mean + 0.5).astype(np.int64)
    if limits is not None:
      low, high = (np.broadcast_to(np.asarray(l, np.int64), mean.shape)
                   for l in limits)
      # Coarse cells entirely inside [low, high].
      cell_low = -((-low) >> self.fine_bits)
      cell_high = ((high + 1) >> self.fine_bits) - 1
      if np.any(cell_high - cell_low < 2 * self.width):
        raise CodingError('A coding range is narrower than the coding '
                          'window; use a finer grid.')
      self.center = np.clip(self.center, cell_low + self.width,
                            cell_high - self.width)
    self.mean = coarse_mean - self.center

  def coarse_and_fine(self, k):
    k = np.asarray(k, np.int64).ravel()
    coarse = k >> self.fine_bits
    return coarse - self.center, k - (coarse << self.fine_bits)

  def join(self, offset, fine):
    return ((self.center + offset) << self.fine_bits) + fine

  def encode_coarse(self, coder, offset, escapable):
    for bucket in reversed(self.buckets):
      members = self.bucket == bucket
      coder.encode_reverse(offset[members].astype(np.int32),
                           _family(bucket, escapable), self.mean[members],
                           self.std[members])

  def decode_coarse(self, coder, escapable):
    offset = np.zeros(self.mean.shape, np.int64)
    for bucket in self.buckets:
      members = self.bucket == bucket
      offset[members] = coder.decode(
          _family(bucket, escapable), self.mean[members], self.std[members])
    return offset


# Bounded -------------------------------------------------------------------------


def encode_bounded(coder, k, mean, std, limits=None):
  """Pushes ``k`` decoded earlier by `decode_bounded` with these parameters.

  Raises:
    CodingError: a ``k`` outside the window, i.e. not a value that
      `decode_bounded` could have produced.
  """
  split = _Split(mean, std, limits)
  offset, fine = split.coarse_and_fine(k)
  if np.any(np.abs(offset) > split.width):
    raise CodingError('A value is outside the coding window of a bounded '
                      'Gaussian (the stream and the model disagree).')
  encode_bits(coder, fine, split.fine_bits)
  split.encode_coarse(coder, offset, escapable=False)


def decode_bounded(coder, mean, std, limits=None):
  """Draws grid values from the stream: int64 ``k`` within the window.

  Args:
    coder: `constriction.stream.stack.AnsCoder`.
    mean: float64 array, Gaussian means in bin units.
    std: float64 array, standard deviations in bin units.
    limits: optional ``(low, high)`` inclusive bounds on ``k`` (scalars or
      arrays); the window is moved inside them.

  Returns:
    int64 array shaped like ``mean`` (flattened).
  """
  split = _Split(mean, std, limits)
  offset = split.decode_coarse(coder, escapable=False)
  fine = decode_bits(coder, split.fine_bits)
  return split.join(offset, fine)


# Escapable ---------------------------------------------------------------------


def encode_escapable(coder, k, mean, std):
  """Pushes arbitrary int64 ``k`` under the discretized Gaussians."""
  split = _Split(mean, std)
  offset, fine = split.coarse_and_fine(k)
  escaped = np.abs(offset) > split.width
  encode_bits(coder, fine, split.fine_bits)
  symbols = offset.copy()
  if escaped.any():
    _encode_distances(coder,
                      np.abs(offset[escaped]) - (split.width[escaped] + 1))
    symbols[escaped] = np.sign(offset[escaped]) * (split.width[escaped] + 1)
  split.encode_coarse(coder, symbols, escapable=True)


def decode_escapable(coder, mean, std):
  """Pops values pushed by `encode_escapable` with these parameters."""
  split = _Split(mean, std)
  offset = split.decode_coarse(coder, escapable=True)
  escaped = np.abs(offset) == split.width + 1
  if escaped.any():
    offset[escaped] = np.sign(offset[escaped]) * (
        split.width[escaped] + 1 + _decode_distances(coder, escaped.sum()))
  fine = decode_bits(coder, split.fine_bits)
  return split.join(offset, fine)
