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

__all__ = ['check_background', 'likelihood_ratio_score']


def check_background(model, background):
  """Raises ValueError unless both models score the same kind of image."""
  shape = 'x'.join(map(str, model.image_shape))
  background_shape = 'x'.join(map(str, background.image_shape))
  if tuple(model.image_shape) != tuple(background.image_shape):
    raise ValueError(f'the background model takes {background_shape} images '
                     f'but the model takes {shape}; train the background on '
                     f'the same images.')
  if model.num_levels != background.num_levels:
    raise ValueError(f'the background model has {background.num_levels} '
                     f'levels but the model has {model.num_levels}; train '
                     f'the background on the same images.')


def likelihood_ratio_score(bpd, background_bpd):
  """bpd(x) − bpd_bg(x) = −LLR(x) / (D ln 2) (higher = more anomalous)."""
  bpd = np.asarray(bpd, np.float64)
  background_bpd = np.asarray(background_bpd, np.float64)
  if bpd.shape != background_bpd.shape:
    raise ValueError(f'bpd {bpd.shape} and background_bpd '
                     f'{background_bpd.shape} differ in shape.')
  return bpd - background_bpd
