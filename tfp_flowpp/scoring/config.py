"""`ScoringConfig`: how images are scored (bounds, batching, noise, codecs).

A plain, frozen dataclass validated on construction, like the other configs;
each field carries a ``help`` text for command-line tools.
"""

import dataclasses
import numbers

from tfp_flowpp.scoring import complexity

__all__ = ['BOUNDS', 'CODECS', 'ScoringConfig']

# The dequantization bound the OOD scores are computed from.
BOUNDS = ('single', 'importance_weighted')
# Lossless codecs (from Pillow) for the input-complexity correction.
CODECS = tuple(complexity.CODEC_OPTIONS)


def _field(default, help_text):
  return dataclasses.field(default=default, metadata={'help': help_text})


def _is_int(value):
  return isinstance(value, numbers.Integral) and not isinstance(value, bool)


@dataclasses.dataclass(frozen=True)
class ScoringConfig:
  """Bounds, batching, noise and codecs of per-image scoring."""

  num_samples: int = _field(
      64, 'Importance samples k of the importance-weighted bound column '
      '(bpd_iw); 1 skips that pass.')
  score_bound: str = _field(
      'single', 'Bound the OOD scores are computed from: single (the '
      'single-sample bound, column bpd) or importance_weighted (k = '
      'num_samples, column bpd_iw; k times slower).')
  batch_size: int = _field(
      256, 'Images per model call; the last batch is padded to this size so '
      'every call has one static shape.')
  seed: int = _field(
      0, 'Seed of the dequantization noise: batch i of a pass uses the '
      'stateless seed (seed, i).')
  codecs: tuple[str, ...] = _field(
      CODECS, 'Lossless codecs whose code length L(x) corrects bits/dim for '
      'input complexity: png (zlib level 9, optimize) and/or webp '
      '(lossless, method 4, quality 100).')

  def __post_init__(self):
    if not _is_int(self.num_samples) or self.num_samples < 1:
      raise ValueError(f'num_samples must be an integer >= 1, got '
                       f'{self.num_samples!r}.')
    if self.score_bound not in BOUNDS:
      raise ValueError(f'score_bound must be one of {", ".join(BOUNDS)}, got '
                       f'{self.score_bound!r}.')
    if self.score_bound == 'importance_weighted' and self.num_samples == 1:
      raise ValueError('score_bound=importance_weighted needs num_samples > '
                       '1; use score_bound=single for k = 1.')
    if not _is_int(self.batch_size) or self.batch_size < 1:
      raise ValueError(f'batch_size must be an integer >= 1, got '
                       f'{self.batch_size!r}.')
    if not _is_int(self.seed) or not 0 <= self.seed < 2**31:
      raise ValueError(f'seed must be an integer in [0, 2**31), got '
                       f'{self.seed!r}.')
    codecs = ((self.codecs,) if isinstance(self.codecs, str) else
              tuple(self.codecs or ()))
    unknown = [c for c in codecs if c not in CODECS]
    if unknown or len(set(codecs)) != len(codecs):
      raise ValueError(f'codecs must be distinct names from '
                       f'{", ".join(CODECS)}, got {self.codecs!r}.')
    object.__setattr__(self, 'codecs', codecs)
    object.__setattr__(self, 'num_samples', int(self.num_samples))
    object.__setattr__(self, 'batch_size', int(self.batch_size))
    object.__setattr__(self, 'seed', int(self.seed))

  @property
  def score_column(self):
    """Name of the bits/dim column the OOD scores are computed from."""
    return 'bpd' if self.score_bound == 'single' else 'bpd_iw'
