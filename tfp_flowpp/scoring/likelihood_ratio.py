"""Likelihood ratio against a background model (Ren et al., 2019).

Ren et al. split an input's likelihood into a *background* part, explained
by population-level statistics any image shares (smoothness, the share of
flat areas), and a *semantic* part specific to the training distribution,
and cancel the first with a second model p_bg trained on the same data with
its semantics destroyed (each pixel replaced by a uniformly random level
with probability μ ∈ [0.1, 0.3]):

    LLR(x) = log p(x) − log p_bg(x)     (nats per image).

In-distribution inputs have a high LLR. The score here is its negative per
dimension in bits, so that, like every score of this package, higher means
more out of distribution:

    −LLR(x) / (D ln 2) = bpd(x) − bpd_bg(x).

The background is any second trained model of the same image shape and
level count (``bin/evaluate --background_workdir=RUN``); how well the score
works depends on how it was trained.

Reference:
  Ren, Liu, Fertig, Snoek, Poplin, DePristo, Dillon, Lakshminarayanan.
  Likelihood Ratios for Out-of-Distribution Detection. NeurIPS 2019.
  arXiv:1906.02845.
"""

import numpy as np

from tfp_flowpp.scoring import per_image

__all__ = ['check_background', 'likelihood_ratio_score']


def check_background(model, background):
  """Raises ValueError unless both models score the same kind of image."""
  per_image.check_same_images(model, background, 'the background model')


def likelihood_ratio_score(bpd, background_bpd):
  """bpd(x) − bpd_bg(x) = −LLR(x) / (D ln 2) (higher = more anomalous)."""
  bpd = np.asarray(bpd, np.float64)
  background_bpd = np.asarray(background_bpd, np.float64)
  if bpd.shape != background_bpd.shape:
    raise ValueError(f'bpd {bpd.shape} and background_bpd '
                     f'{background_bpd.shape} differ in shape.')
  return bpd - background_bpd
