"""The typicality test of Nalisnick et al. (2019) on bits/dim.

A likelihood model can give out-of-distribution inputs a *higher* likelihood
than its own data (Nalisnick et al., 2019a): high-dimensional data lives in
the model's typical set, not at its density peak. The typicality test
(Nalisnick et al., 2019b, Algorithm 1) therefore asks whether a batch of M
inputs has the *entropy* of the training distribution:

* Ĥ = (1/N) Σ_n −log p(x_n), the entropy estimate, over the training set;
* the statistic of a batch x̃_1..M is ε̂ = |(1/M) Σ_m −log p(x̃_m) − Ĥ|;
* its null distribution is bootstrapped: K batches of M inputs drawn with
  replacement from held-out in-distribution data (the validation split)
  give ε_1..K; the batch is out of distribution at level α when ε̂ exceeds
  the (1 − α) quantile ε_α^M.

Here −log p is measured in bits/dim (a positive multiple of nats per image,
so every comparison is unchanged). The p-value is the bootstrap tail
probability with the usual +1 correction, p = (1 + #{ε_k ≥ ε̂}) / (K + 1)
(Davison & Hinkley, 1997), so it is never exactly 0. With M = 1 the
statistic is the per-image score |bpd(x) − Ĥ| (higher = more anomalous).

References:
  Nalisnick, Matsukawa, Teh, Lakshminarayanan. Detecting Out-of-Distribution
  Inputs to Deep Generative Models Using Typicality. arXiv:1906.02994.
  Nalisnick, Matsukawa, Teh, Gorur, Lakshminarayanan. Do Deep Generative
  Models Know What They Don't Know? ICLR 2019. arXiv:1810.09136.
"""

import dataclasses

import numpy as np

__all__ = ['TypicalityResult', 'TypicalityTest']

# Bootstrap draws generated at once (bounds the index array's memory).
_DRAWS_PER_CHUNK = 1 << 22


def _as_bpd(values, what):
  values = np.asarray(values, np.float64).reshape(-1)
  if not len(values):
    raise ValueError(f'{what} is empty; pass at least one bits/dim value.')
  if not np.all(np.isfinite(values)):
    raise ValueError(f'{what} has non-finite bits/dim values.')
  return values


@dataclasses.dataclass(frozen=True)
class TypicalityResult:
  """Outcome of the typicality test for one batch.

  Attributes:
    batch_size: M, the number of inputs tested together.
    statistic: ε̂ = |mean bpd of the batch − Ĥ|.
    threshold: ε_α^M, the (1 − α) quantile of the bootstrap statistics.
    alpha: the significance level α.
    p_value: bootstrap p-value of ε̂.
    out_of_distribution: ε̂ > ε_α^M.
  """

  batch_size: int
  statistic: float
  threshold: float
  alpha: float
  p_value: float
  out_of_distribution: bool


class TypicalityTest:
  """Typicality test of M-sized batches against the training distribution."""

  def __init__(self, entropy_bpd, bootstrap_bpd, num_bootstrap=10_000,
               seed=0):
    """Creates the test.

    Args:
      entropy_bpd: Ĥ in bits/dim (the mean bpd of the training images).
      bootstrap_bpd: bits/dim of held-out in-distribution images (the
        validation split), resampled for the null distribution.
      num_bootstrap: K, bootstrap batches per batch size.
      seed: seed of the bootstrap resampling.
    """
    self.entropy_bpd = float(entropy_bpd)
    if not np.isfinite(self.entropy_bpd):
      raise ValueError(f'entropy_bpd must be finite, got {entropy_bpd}.')
    self.bootstrap_bpd = _as_bpd(bootstrap_bpd, 'bootstrap_bpd')
    self.num_bootstrap = int(num_bootstrap)
    if self.num_bootstrap < 1:
      raise ValueError(f'num_bootstrap must be >= 1, got {num_bootstrap}.')
    self.seed = int(seed)
    self._bootstrap = {}

  @classmethod
  def fit(cls, reference_bpd, bootstrap_bpd, num_bootstrap=10_000, seed=0):
    """The test with Ĥ = mean of ``reference_bpd`` (the training images)."""
    reference = _as_bpd(reference_bpd, 'reference_bpd')
    return cls(reference.mean(), bootstrap_bpd, num_bootstrap, seed)

  def per_image_scores(self, bpd):
    """|bpd − Ĥ| of each image: the M = 1 statistic (higher = atypical)."""
    return np.abs(np.asarray(bpd, np.float64) - self.entropy_bpd)

  def statistic(self, bpd):
    """ε̂ = |mean(bpd) − Ĥ| of one batch."""
    return float(abs(_as_bpd(bpd, 'bpd').mean() - self.entropy_bpd))

  def batch_statistics(self, bpd, batch_size, seed=0):
    """ε̂ of disjoint random batches of ``batch_size`` images.

    The images are shuffled with ``seed`` and cut into ``len(bpd) //
    batch_size`` batches (the remainder is left out); with ``batch_size=1``
    this is `per_image_scores` in a shuffled order.

    Returns:
      float64 ``np.ndarray`` with one statistic per batch.
    """
    bpd = _as_bpd(bpd, 'bpd')
    batch_size = int(batch_size)
    count = len(bpd) // batch_size if batch_size >= 1 else 0
    if count < 1:
      raise ValueError(f'{len(bpd)} images make no batch of {batch_size}; '
                       f'use a batch size of 1..{len(bpd)}.')
    order = np.random.default_rng(seed).permutation(len(bpd))
    batches = bpd[order[:count * batch_size]].reshape(count, batch_size)
    return np.abs(batches.mean(axis=1) - self.entropy_bpd)

  def bootstrap_statistics(self, batch_size):
    """ε_1..K for batches of ``batch_size`` held-out images (cached)."""
    batch_size = int(batch_size)
    if batch_size < 1:
      raise ValueError(f'batch_size must be >= 1, got {batch_size}.')
    if batch_size not in self._bootstrap:
      rng = np.random.default_rng([self.seed, batch_size])
      per_chunk = max(1, _DRAWS_PER_CHUNK // batch_size)
      means = []
      for start in range(0, self.num_bootstrap, per_chunk):
        rows = min(per_chunk, self.num_bootstrap - start)
        index = rng.integers(0, len(self.bootstrap_bpd), (rows, batch_size))
        means.append(self.bootstrap_bpd[index].mean(axis=1))
      self._bootstrap[batch_size] = np.abs(
          np.concatenate(means) - self.entropy_bpd)
    return self._bootstrap[batch_size]

  def threshold(self, batch_size, alpha=0.01):
    """ε_α^M: the (1 − α) quantile of the bootstrap statistics."""
    if not 0 < alpha < 1:
      raise ValueError(f'alpha must be in (0, 1), got {alpha}.')
    return float(np.quantile(self.bootstrap_statistics(batch_size),
                             1. - alpha))

  def p_value(self, bpd):
    """Bootstrap p-value of the batch ``bpd`` (M = its length)."""
    bpd = _as_bpd(bpd, 'bpd')
    null = self.bootstrap_statistics(len(bpd))
    return float((1 + np.count_nonzero(null >= self.statistic(bpd))) /
                 (len(null) + 1))

  def test(self, bpd, alpha=0.01):
    """Runs the test on one batch; returns a `TypicalityResult`."""
    bpd = _as_bpd(bpd, 'bpd')
    statistic = self.statistic(bpd)
    threshold = self.threshold(len(bpd), alpha)
    return TypicalityResult(
        batch_size=len(bpd), statistic=statistic, threshold=threshold,
        alpha=float(alpha), p_value=self.p_value(bpd),
        out_of_distribution=bool(statistic > threshold))
