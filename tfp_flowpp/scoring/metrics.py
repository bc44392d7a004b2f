"""Detection metrics of a score: AUROC and AUPR, from `sklearn.metrics`.

Candidates are the positive class and every score is "higher = more out of
distribution", so AUROC is the probability that a random candidate scores
higher than a random in-distribution image (ties count half): 0.5 is
chance, 1 perfect separation and values below 0.5 mean the score ranks the
candidates as *more* in-distribution. AUPR is the area under the
precision-recall curve with candidates positive
(`sklearn.metrics.average_precision_score`); its chance level is the share
of candidates.
"""

import numpy as np
from sklearn import metrics as sk_metrics

__all__ = ['detection_metrics']


def _scores(values, what):
  values = np.asarray(values, np.float64).reshape(-1)
  if not len(values):
    raise ValueError(f'{what} is empty; pass at least one score.')
  if not np.all(np.isfinite(values)):
    raise ValueError(f'{what} has {np.count_nonzero(~np.isfinite(values))} '
                     f'non-finite scores.')
  return values


def detection_metrics(in_distribution_scores, candidate_scores):
  """AUROC and AUPR of separating candidates from in-distribution images.

  Args:
    in_distribution_scores: scores of in-distribution images (negatives).
    candidate_scores: scores of the candidates (positives).

  Returns:
    ``dict(auroc=float, aupr=float, num_in_distribution=int,
    num_candidates=int)``.
  """
  negatives = _scores(in_distribution_scores, 'in_distribution_scores')
  positives = _scores(candidate_scores, 'candidate_scores')
  labels = np.concatenate([np.zeros(len(negatives)), np.ones(len(positives))])
  scores = np.concatenate([negatives, positives])
  return {
      'auroc': float(sk_metrics.roc_auc_score(labels, scores)),
      'aupr': float(sk_metrics.average_precision_score(labels, scores)),
      'num_in_distribution': len(negatives),
      'num_candidates': len(positives),
  }
