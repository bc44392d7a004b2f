"""The discretization shared by every coding step: a grid and a noise scale.

Local bits-back coding (Ho, Lohn & Abbeel 2019) codes every intermediate of
a flow on a fine grid of bin width ``δ = 2^-grid_bits``; the integer ``k``
stands for the bin ``[k·δ, (k+1)·δ)`` and its value is the midpoint
``(k + ½)·δ``. Each elementwise step draws its output from the stream under
``N(f(x), σ²·f'(x)²)`` and then pushes its input under ``N(f⁻¹(ȳ), σ²)``,
with the noise scale ``σ = 2^-noise_bits``. The net cost of a step is
``−log2|f'(x)|`` plus terms of order σ², so σ small makes coding exact in
the limit while the grid has to stay much finer than ``σ·|f'|`` (here
``δ/σ = 2^(noise_bits − grid_bits)``).

Where ``|f'|`` is too small for that (a flat stretch of a mixture CDF; the
dequantizer's squash codes its tails exactly instead, see
`local_bits_back.Squash`), `noise_for` raises σ for that element until the
output Gaussian spans `MIN_OUTPUT_BINS` bins, up to `MAX_NOISE`; the coding
stays exact, and the extra cost is second order in the larger σ instead of
the ``log2(δ/(σ·|f'|))`` bits a sub-bin output Gaussian would waste.
"""

import dataclasses

import numpy as np

__all__ = ['CodingGrid', 'MIN_OUTPUT_BINS', 'MAX_NOISE']

MIN_OUTPUT_BINS = 16.
MAX_NOISE = 2.**-3


@dataclasses.dataclass(frozen=True)
class CodingGrid:
  """Bin width ``2^-grid_bits`` and noise scale ``2^-noise_bits``."""

  grid_bits: int = 20
  noise_bits: int = 12

  def __post_init__(self):
    for name in ('grid_bits', 'noise_bits'):
      value = getattr(self, name)
      if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
        raise ValueError(f'{name} must be an integer, got {value!r}.')
    if not 8 <= self.grid_bits <= 40:
      raise ValueError(f'grid_bits must be in [8, 40], got {self.grid_bits}.')
    if not 2 <= self.noise_bits <= self.grid_bits - 4:
      raise ValueError(f'noise_bits must be in [2, grid_bits - 4] = [2, '
                       f'{self.grid_bits - 4}], got {self.noise_bits}.')

  @property
  def bins_per_unit(self):
    """``1/δ`` as a float (exact power of two)."""
    return float(np.ldexp(1., self.grid_bits))

  @property
  def noise(self):
    """``σ`` in value units."""
    return float(np.ldexp(1., -self.noise_bits))

  def noise_for(self, log_derivative):
    """Per-element noise σ(x) from ``log|f'(x)|`` (float64 array)."""
    log_derivative = np.asarray(log_derivative, np.float64)
    wanted = MIN_OUTPUT_BINS * np.exp(-log_derivative - self.grid_bits *
                                      np.log(2.))
    return np.clip(wanted, self.noise, MAX_NOISE)

  def values(self, k):
    """Midpoints ``(k + ½)·δ`` (float64) of the bins ``k`` (int64)."""
    return np.ldexp(np.asarray(k, np.int64).astype(np.float64) + 0.5,
                    -self.grid_bits)

  def bins(self, values):
    """Positions in bin units, where bin ``k`` has centre ``k``."""
    return np.ldexp(np.asarray(values, np.float64), self.grid_bits) - 0.5

  def scale_to_bins(self, std):
    """A standard deviation in value units → bin units."""
    return np.ldexp(np.asarray(std, np.float64), self.grid_bits)

