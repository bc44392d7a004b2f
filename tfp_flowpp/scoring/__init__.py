"""Scoring images with a trained model: per-image bits/dim, OOD and anomalies.

Raw likelihood is a poor out-of-distribution detector for flows (Nalisnick
et al., 2019: Glow trained on Fashion-MNIST prefers MNIST), so besides the
bounds this package computes the three cheap remedies, each oriented
"higher = more out of distribution":

  from tfp_flowpp import scoring
  scorer = scoring.ImageScorer(model, scoring.ScoringConfig(num_samples=16),
                               background=background_model)
  test, _, _ = scorer.fit_typicality(train_images, validation_images)
  columns = scorer.score(images, typicality=test)   # dict of [N] arrays
  scoring.detection_metrics(in_scores, candidate_scores)  # AUROC, AUPR

Modules, by what they hold:

* `config`: `ScoringConfig` (bounds, batching, noise seed, codecs).
* `per_image`: `PerImageBpd`, per-image bits/dim with static-shape batches.
* `typicality`: `TypicalityTest` (Nalisnick et al., 2019, bootstrap p-value).
* `complexity`: PNG / WebP code lengths and S(x) (Serrà et al., 2020).
* `likelihood_ratio`: the score against a background model (Ren et al.,
  2019).
* `scorer`: `ImageScorer`, every column in one pass.
* `partial_scores`: `PartialScores`, a pass's finished batches in a file,
  so a long (importance-weighted) pass resumes where it was interrupted.
* `metrics`: `detection_metrics` (AUROC / AUPR from `sklearn.metrics`).
* `score_files`: `write_scores` / `read_scores` (CSV or .npz tables).
* `histograms`: `plot_score_histograms` (in-distribution against candidates).
"""

from tfp_flowpp.scoring.complexity import code_length_bits
from tfp_flowpp.scoring.complexity import complexity_corrected_bpd
from tfp_flowpp.scoring.config import BOUNDS
from tfp_flowpp.scoring.config import CODECS
from tfp_flowpp.scoring.config import ScoringConfig
from tfp_flowpp.scoring.histograms import plot_score_histograms
from tfp_flowpp.scoring.likelihood_ratio import check_background
from tfp_flowpp.scoring.likelihood_ratio import likelihood_ratio_score
from tfp_flowpp.scoring.metrics import detection_metrics
from tfp_flowpp.scoring.partial_scores import PartialScores
from tfp_flowpp.scoring.per_image import PerImageBpd
from tfp_flowpp.scoring.score_files import FORMATS
from tfp_flowpp.scoring.score_files import read_scores
from tfp_flowpp.scoring.score_files import write_scores
from tfp_flowpp.scoring.scorer import ImageScorer
from tfp_flowpp.scoring.typicality import TypicalityResult
from tfp_flowpp.scoring.typicality import TypicalityTest

__all__ = [
    'BOUNDS',
    'CODECS',
    'FORMATS',
    'ImageScorer',
    'PartialScores',
    'PerImageBpd',
    'ScoringConfig',
    'TypicalityResult',
    'TypicalityTest',
    'check_background',
    'code_length_bits',
    'complexity_corrected_bpd',
    'detection_metrics',
    'likelihood_ratio_score',
    'plot_score_histograms',
    'read_scores',
    'write_scores',
]
