"""Local bits-back coding steps (Ho, Lohn & Abbeel 2019, §3).

A flow ``z = f(x)`` turns a density on ``z`` into one on ``x`` by
``p(x) = p(z)·|det f'(x)|``. Local bits-back coding realises the
``−log|det f'|`` term one layer at a time. For a layer ``y = f(x)`` whose
input ``x`` is on the grid, the encoder

1. *decodes* (draws from the stream) ``ȳ ~ N(f(x), σ²·J Jᵀ)`` on the grid —
   this gets back ``−log N(ȳ; f(x), σ²JJᵀ)·δ^d`` bits;
2. *encodes* ``x ~ N(f⁻¹(ȳ), σ²·I)`` on the grid — this costs
   ``−log N(x; f⁻¹(ȳ), σ²)·δ^d`` bits;

and hands ``ȳ`` to the next layer. Since ``f⁻¹(ȳ) ≈ x − σ·ε`` when
``ȳ = f(x) + σJε``, the net cost is ``−log|det J| + O(σ²)``; the decoder
runs the two steps mirrored (decode ``x`` given ``ȳ``, then encode ``ȳ``
given ``x``), which restores the stream exactly.

Every step here has ``encode(coder, k, context)`` (data → latent: returns
the output bins) and ``decode(coder, k, context)`` (the exact inverse, which
also undoes the step's effect on the coder). Step kinds:

* `Elementwise`: the bits-back step above for a transform that acts on each
  element separately (``J`` diagonal) — preprocessing, normalisation, the
  transformed half of a coupling, the diagonal of a triangular matrix.
* `Squash`: the dequantizer's final map onto the bins of [0, 1):
  `Elementwise` where an output bin holds few input bins, an exact uniform
  code of the input bin among those of its output bin in the flat tails.
* `Shift`, `UnitTriangular`: volume-preserving maps that add to an element
  a function of *other* elements (additive couplings, the unit-triangular
  factors of a 1×1 convolution); coded *exactly* as integer shifts of the
  bins, with no stream traffic.
* `Permutation`: splits, squeezes, swaps — a reindexing of the bins.
* `Sequence`, `Channels` (a sub-flow on leading channels, for factor-out),
  `Coupling` (parameters from the conditioning half, then a step on the
  other half).

Elementwise transforms are objects with ``forward(x) -> (y, log|f'(x)|)``
and ``inverse(y) -> (x, log|f'(x)|)`` on float64 NumPy arrays; they must be
deterministic functions of their inputs (the two sides of the code
recompute them).
"""

import numpy as np

from tfp_flowpp.compression import gaussian_coding

__all__ = [
    'Step', 'Elementwise', 'Squash', 'Shift', 'UnitTriangular', 'Permutation',
    'Sequence', 'Channels', 'Coupling'
]


class Step:
  """A coding step; ``encode`` and ``decode`` are exact inverses."""

  def encode(self, coder, k, context=None):
    """Input bins → output bins, pulling/pushing bits on ``coder``."""
    raise NotImplementedError

  def decode(self, coder, k, context=None):
    """Output bins → input bins; restores ``coder`` to before `encode`."""
    raise NotImplementedError

  def output_shape(self, input_shape):
    """Event shape after the step (default: unchanged)."""
    return tuple(input_shape)


class Elementwise(Step):
  """Local bits-back coding of an elementwise bijection ``transform``.

  The noise scale is per element: ``σ(x) = grid.noise_for(log|f'(x)|)``,
  which is the grid's base noise unless ``f'`` is so small that the output
  Gaussian ``N(f(x), σ²f'²)`` would span fewer than a few bins (then the
  draw would return almost no bits while the push still costs them, e.g. a
  squash deep in its tail). The encoder uses ``σ(x)`` for the draw and
  ``σ(f⁻¹(ȳ))`` for the push; the decoder computes the same two numbers
  from the same values in the other order.

  ```none
  encode:  ȳ ~ N(f(x), σ(x)² f'(x)²)      drawn from the stream
           push x under N(f⁻¹(ȳ), σ(f⁻¹(ȳ))²)
  net cost ≈ −log2 |f'(x)| bits per element
  ```

  #### Examples

  Code ``y = 3x`` on 1,000 grid values: the stream grows by ``−log2 3``
  bits per element, and decoding restores the input and the stream.

  >>> import constriction
  >>> import numpy as np
  >>> from tfp_flowpp.compression import grid as grid_lib
  >>> from tfp_flowpp.compression import local_bits_back as lbb
  >>> class Triple:
  ...   def forward(self, x):
  ...     return 3. * x, np.full(np.shape(x), np.log(3.))
  ...   def inverse(self, y):
  ...     return y / 3., np.full(np.shape(y), np.log(3.))
  >>> grid = grid_lib.CodingGrid(grid_bits=24, noise_bits=12)
  >>> rng = np.random.default_rng(0)
  >>> coder = constriction.stream.stack.AnsCoder(
  ...     rng.integers(0, 2**32, 10000, dtype=np.uint32))
  >>> before = coder.get_compressed().copy()
  >>> k = rng.integers(-2**24, 2**24, 1000)
  >>> step = lbb.Elementwise(Triple(), grid)
  >>> k_out = step.encode(coder, k)
  >>> bits = coder.num_valid_bits() - 32 * len(before)
  >>> print(f'{bits / 1000:.2f}')
  -1.58
  >>> bool(np.array_equal(step.decode(coder, k_out), k))
  True
  >>> bool(np.array_equal(coder.get_compressed(), before))
  True

  #### References

  [1]: Jonathan Ho, Evan Lohn and Pieter Abbeel. Compression with Flows via
       Local Bits-Back Coding. In _Neural Information Processing Systems_,
       2019. https://arxiv.org/abs/1905.08500
  """

  def __init__(self, transform, grid, limits=None, name='elementwise'):
    """Creates the step.

    Args:
      transform: object with ``forward(x) -> (y, log|f'(x)|)`` and
        ``inverse(y) -> (x, log|f'(x)|)`` on float64 arrays (see module
        docstring).
      grid: `CodingGrid`.
      limits: optional inclusive ``(low, high)`` bounds on the output bins
        (e.g. the dequantization noise must stay in [0, 1)).
      name: for error messages.
    """
    self.transform = transform
    self.grid = grid
    self.limits = limits
    self.name = name

  def _output_params(self, k_in):
    """Mean and std (bins) of ``ȳ`` given the input bins."""
    y, log_derivative = self.transform.forward(self.grid.values(k_in))
    log_derivative = np.asarray(log_derivative, np.float64)
    noise = self.grid.noise_for(log_derivative)
    std = self.grid.scale_to_bins(noise * np.exp(log_derivative))
    return self.grid.bins(y), std

  def _input_params(self, k_out):
    """Mean and std (bins) of ``x`` given the output bins."""
    x, log_derivative = self.transform.inverse(self.grid.values(k_out))
    noise = self.grid.noise_for(np.asarray(log_derivative, np.float64))
    return self.grid.bins(x), self.grid.scale_to_bins(noise)

  def encode(self, coder, k, context=None):
    del context
    k = np.asarray(k, np.int64)
    try:
      mean, std = self._output_params(k)
      k_out = gaussian_coding.decode_bounded(coder, mean, std, self.limits)
      k_out = k_out.reshape(k.shape)
      mean, std = self._input_params(k_out)
      gaussian_coding.encode_escapable(coder, k, mean, std)
    except gaussian_coding.CodingError as e:
      raise gaussian_coding.CodingError(f'{self.name}: {e}') from e
    return k_out

  def decode(self, coder, k, context=None):
    del context
    k = np.asarray(k, np.int64)
    try:
      mean, std = self._input_params(k)
      k_in = gaussian_coding.decode_escapable(coder, mean, std)
      k_in = k_in.reshape(k.shape)
      mean, std = self._output_params(k_in)
      gaussian_coding.encode_bounded(coder, k, mean, std, self.limits)
    except gaussian_coding.CodingError as e:
      raise gaussian_coding.CodingError(f'{self.name}: {e}') from e
    return k_in


class Squash(Step):
  """An increasing squash ``u = f(t)`` onto the bins of [0, 1), coded exactly.

  The variational dequantizer ends in a squash (`tfb.NormalCDF`,
  `tfb.Sigmoid`) whose derivative vanishes in its tails: there one output
  bin of u holds many input bins of t (the last bin of Φ holds every
  ``t ≥ Φ⁻¹(1 − δ)``, 4.9 on a 2^-20 grid), so the Gaussian step of
  `Elementwise` would need an output Gaussian narrower than a bin or an
  input noise wider than the curvature of ``log f'`` allows, and it wastes
  1–30 bits on such an element. This step splits the output bins in two:

  * **core** bins ``[B_lo, B_hi]``, where an output bin holds fewer than
    ``2^max(4, grid_bits − noise_bits)`` input bins: the `Elementwise`
    Gaussian step, with the draw kept inside the core;
  * **tail** bins: u is the bin of ``f(t)`` (no draw) and t is pushed
    uniformly among the input bins that map to it (``⌈b⌉`` from
    ``f⁻¹`` at the bin edges, so both sides agree exactly), which costs
    ``log2 n_b ≈ −log2 f'(t)`` bits; in the two end bins, whose preimage
    is unbounded, the distance of t from the bin's edge is pushed under a
    geometric law whose mean is the distance over which ``f'`` falls by a
    factor e (with an escape, so any t codes).

  Which part codes an element is decided by its output bin, which the
  decoder sees first. The split assumes ``f'`` rises then falls (true of
  both squashes).
  """

  def __init__(self, transform, grid, name='squash'):
    self.transform = transform
    self.grid = grid
    self.name = name
    self.top = (1 << grid.grid_bits) - 1
    if not transform.forward(np.array([-1.]))[0][0] < transform.forward(
        np.array([1.]))[0][0]:
      raise ValueError(f'{name}: the squash must be increasing.')
    self.max_tail_width = 1 << max(4, grid.grid_bits - grid.noise_bits)
    middle = self.top // 2
    self.low = self._bisect(0, middle, tail_below=True)
    self.high = self._bisect(middle, self.top, tail_below=False)
    self.core = Elementwise(transform, grid, limits=(self.low, self.high),
                            name=name)
    self.ends = self._end_codes()

  def _starts(self, b):
    """First input bin of each output bin ``b`` (±2^62 beyond the ends)."""
    b = np.asarray(b, np.int64)
    edges = np.ldexp(np.clip(b, 1, self.top).astype(np.float64),
                     -self.grid.grid_bits)
    t, _ = self.transform.inverse(edges)
    start = np.ceil(self.grid.bins(np.asarray(t, np.float64)))
    start = np.clip(np.nan_to_num(start, nan=0.), -2.**62, 2.**62)
    start = start.astype(np.int64)
    start = np.where(b <= 0, np.int64(-2**62), start)
    return np.where(b > self.top, np.int64(2**62), start)

  def _width(self, b):
    return self._starts(np.asarray(b) + 1) - self._starts(b)

  def _bisect(self, lo, hi, tail_below):
    """The core's first (``tail_below``) or last output bin in [lo, hi].

    Below the middle the preimages narrow as b grows, above it they widen:
    bisection for the boundary between wide (≥ ``max_tail_width``) and
    narrow bins, with the outer end wide and the inner end narrow.
    """
    wide = lambda b: self._width(np.array([b]))[0] >= self.max_tail_width
    outer = lo if tail_below else hi
    if not wide(outer):
      return outer
    while hi - lo > 1:
      mid = (lo + hi) // 2
      if wide(mid) == tail_below:
        lo = mid
      else:
        hi = mid
    return hi if tail_below else lo

  def _output_bins(self, k):
    """The output bin b with ``starts(b) ≤ k < starts(b + 1)``."""
    y, _ = self.transform.forward(self.grid.values(k))
    b = np.clip(np.floor(self.grid.bins(y) + 0.5), 0, self.top).astype(
        np.int64)
    for _ in range(64):
      below = (b > 0) & (self._starts(b) > k)
      above = (b < self.top) & (self._starts(b + 1) <= k)
      if not (below.any() or above.any()):
        return b
      b = b - below + above
    raise gaussian_coding.CodingError(
        f'{self.name}: the squash and its inverse disagree.')

  def _end_codes(self):
    """``(edge, mean)`` of the two end bins, in input bins.

    Beyond the edge T of an end bin, ``f'(t) ≈ f'(T)·exp(−λ|t − T|)``
    (λ = |T| for Φ, 1 for the sigmoid), so the distance from the edge is
    coded geometrically with mean 1/λ: about ``−log2 f'(t)`` bits.
    """
    ends = []
    for inner, edge_bin, inward in ((1, 1, 1), (self.top - 1, self.top, -1)):
      edge = int(self._starts(np.array([edge_bin]))[0])
      h = int(self._width(np.array([inner]))[0])
      probe = np.array([edge + inward * h, edge])
      _, ld = self.transform.forward(self.grid.values(probe))
      rate = abs(float(ld[1] - ld[0])) / h  # Per input bin.
      ends.append((edge, max(1., 1. / max(rate, 1e-300))))
    return ends

  def _push_tail(self, coder, k, b):
    (low_edge, low_mean), (high_edge, high_mean) = self.ends
    mid = (b > 0) & (b < self.top)
    if (b == 0).any():
      gaussian_coding.encode_geometric(coder, low_edge - 1 - k[b == 0],
                                       low_mean)
    if (b == self.top).any():
      gaussian_coding.encode_geometric(coder, k[b == self.top] - high_edge,
                                       high_mean)
    if mid.any():
      start, width = self._starts(b[mid]), self._width(b[mid])
      gaussian_coding.encode_uniform_sizes(coder, k[mid] - start, width)

  def _pop_tail(self, coder, b):
    (low_edge, low_mean), (high_edge, high_mean) = self.ends
    k = np.zeros(b.shape, np.int64)
    mid = (b > 0) & (b < self.top)
    if mid.any():
      start, width = self._starts(b[mid]), self._width(b[mid])
      k[mid] = start + gaussian_coding.decode_uniform_sizes(coder, width)
    if (b == self.top).any():
      k[b == self.top] = high_edge + gaussian_coding.decode_geometric(
          coder, np.sum(b == self.top), high_mean)
    if (b == 0).any():
      k[b == 0] = low_edge - 1 - gaussian_coding.decode_geometric(
          coder, np.sum(b == 0), low_mean)
    return k

  def encode(self, coder, k, context=None):
    del context
    k = np.asarray(k, np.int64)
    flat = k.ravel()
    b = self._output_bins(flat)
    core = (b >= self.low) & (b <= self.high)
    out = b.copy()
    if core.any():
      out[core] = self.core.encode(coder, flat[core])
    if (~core).any():
      self._push_tail(coder, flat[~core], b[~core])
    return out.reshape(k.shape)

  def decode(self, coder, k, context=None):
    del context
    k = np.asarray(k, np.int64)
    flat = k.ravel()
    core = (flat >= self.low) & (flat <= self.high)
    restored = np.zeros(flat.shape, np.int64)
    if (~core).any():
      restored[~core] = self._pop_tail(coder, flat[~core])
    if core.any():
      restored[core] = self.core.decode(coder, flat[core])
    return restored.reshape(k.shape)


class Shift(Step):
  """``y = x + s`` for a given real shift ``s``, coded exactly.

  ``k_y = k_x + round(s/δ)``: a bijection of the bins with no stream
  traffic (its log-det is zero). ``s`` must not depend on ``x`` (it comes
  from the other half of a coupling).
  """

  def __init__(self, shift, grid, name='shift'):
    self.shift_bins = _round_to_bins(shift, grid)
    self.name = name

  def encode(self, coder, k, context=None):
    del coder, context
    return np.asarray(k, np.int64) + self.shift_bins

  def decode(self, coder, k, context=None):
    del coder, context
    return np.asarray(k, np.int64) - self.shift_bins


class UnitTriangular(Step):
  """``y = T x`` per pixel for unit-triangular ``T``, coded exactly.

  ``T`` (``[groups, n, n]``, acting on ``groups`` consecutive blocks of
  ``n`` channels) is a product of ``n − 1`` shears, each adding a linear
  function of untouched channels to one channel; each shear is an exact
  integer shift of the bins, so the step moves no bits. Lower-triangular
  shears run from the last channel down, upper-triangular ones from the
  first up, so every shear reads original values.
  """

  def __init__(self, matrix, grid, lower, name='unit_triangular'):
    self.matrix = np.asarray(matrix, np.float64)
    self.grid = grid
    self.lower = bool(lower)
    self.name = name
    groups, n, _ = self.matrix.shape
    self.groups, self.size = groups, n

  def _order(self):
    n = self.size
    return list(range(n - 1, 0, -1)) if self.lower else list(range(n - 1))

  def _shift_bins(self, grouped, i):
    values = self.grid.values(grouped)
    sources = range(i) if self.lower else range(i + 1, self.size)
    total = np.zeros(grouped.shape[:-1], np.float64)
    for j in sources:  # Fixed summation order: identical on both sides.
      total = total + values[..., j] * self.matrix[:, i, j]
    return _round_to_bins(total, self.grid)

  def _grouped(self, k):
    k = np.array(k, np.int64)
    return k.reshape(k.shape[:-1] + (self.groups, self.size))

  def encode(self, coder, k, context=None):
    del coder, context
    grouped = self._grouped(k)
    for i in self._order():
      grouped[..., i] += self._shift_bins(grouped, i)
    return grouped.reshape(np.shape(k))

  def decode(self, coder, k, context=None):
    del coder, context
    grouped = self._grouped(k)
    for i in reversed(self._order()):
      grouped[..., i] -= self._shift_bins(grouped, i)
    return grouped.reshape(np.shape(k))


def _round_to_bins(shift, grid):
  """A real shift as a whole number of bins (round half up)."""
  return np.floor(
      np.ldexp(np.asarray(shift, np.float64), grid.grid_bits) +
      0.5).astype(np.int64)


class Permutation(Step):
  """Reindexing of the event: ``out.flat[i] = in.flat[perm[i]]``."""

  def __init__(self, permutation, input_shape, output_shape, name='perm'):
    self.permutation = np.asarray(permutation, np.int64)
    self.inverse_permutation = np.argsort(self.permutation)
    self.input_shape = tuple(input_shape)
    self._output_shape = tuple(output_shape)
    self.name = name

  def output_shape(self, input_shape):
    del input_shape
    return self._output_shape

  def _apply(self, k, permutation, shape):
    k = np.asarray(k, np.int64)
    flat = k.reshape(k.shape[0], -1)
    return flat[:, permutation].reshape((k.shape[0],) + shape)

  def encode(self, coder, k, context=None):
    del coder, context
    return self._apply(k, self.permutation, self._output_shape)

  def decode(self, coder, k, context=None):
    del coder, context
    return self._apply(k, self.inverse_permutation, self.input_shape)


class Sequence(Step):
  """Steps applied in order (data → latent); decoded in reverse."""

  def __init__(self, steps):
    self.steps = list(steps)

  def output_shape(self, input_shape):
    for step in self.steps:
      input_shape = step.output_shape(input_shape)
    return input_shape

  def encode(self, coder, k, context=None):
    for step in self.steps:
      k = step.encode(coder, k, context)
    return k

  def decode(self, coder, k, context=None):
    for step in reversed(self.steps):
      k = step.decode(coder, k, context)
    return k


class Channels(Step):
  """A step on the first ``num_channels`` channels; the rest pass through."""

  def __init__(self, step, num_channels):
    self.step = step
    self.num_channels = int(num_channels)

  def output_shape(self, input_shape):
    inner = self.step.output_shape(
        tuple(input_shape[:-1]) + (self.num_channels,))
    return tuple(inner[:-1]) + (inner[-1] + input_shape[-1] -
                                self.num_channels,)

  def encode(self, coder, k, context=None):
    k = np.asarray(k, np.int64)
    kept = self.step.encode(coder, k[..., :self.num_channels], context)
    return np.concatenate([kept, k[..., self.num_channels:]], axis=-1)

  def decode(self, coder, k, context=None):
    k = np.asarray(k, np.int64)
    kept = self.step.decode(coder, k[..., :self.num_channels], context)
    return np.concatenate([kept, k[..., self.num_channels:]], axis=-1)


class Coupling(Step):
  """``x = [x_a, x_b]``: ``x_a`` passes, ``x_b`` goes through ``make_step``.

  ``make_step(values_a, context)`` returns the `Step` for ``x_b`` given the
  conditioning half's values (float64) — e.g. an `Elementwise` step whose
  transform holds the coupling network's output, or a `Shift`.
  """

  def __init__(self, make_step, num_conditioning, grid):
    self.make_step = make_step
    self.num_conditioning = int(num_conditioning)
    self.grid = grid

  def _split(self, k):
    k = np.asarray(k, np.int64)
    return k[..., :self.num_conditioning], k[..., self.num_conditioning:]

  def encode(self, coder, k, context=None):
    k_a, k_b = self._split(k)
    step = self.make_step(self.grid.values(k_a), context)
    return np.concatenate([k_a, step.encode(coder, k_b)], axis=-1)

  def decode(self, coder, k, context=None):
    k_a, k_b = self._split(k)
    step = self.make_step(self.grid.values(k_a), context)
    return np.concatenate([k_a, step.decode(coder, k_b)], axis=-1)
