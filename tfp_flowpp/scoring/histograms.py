"""Histograms of a score on in-distribution images against candidates."""

import io
import math

import numpy as np

from tfp_flowpp.training import atomic_files

__all__ = ['plot_score_histograms']


def plot_score_histograms(panels, path, in_distribution_label='in-distribution',
                          candidates_label='candidates', bins=40):
  """One panel per score, both sets' histograms overlaid; saved as PNG.

  Args:
    panels: list of ``(title, in_distribution_scores, candidate_scores)``.
    path: output PNG (written atomically).
    in_distribution_label: legend entry of the in-distribution set.
    candidates_label: legend entry of the candidates.
    bins: bins per panel, shared by both sets.
  """
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top

  if not panels:
    raise ValueError('no scores to plot.')
  columns = min(3, len(panels))
  rows = int(math.ceil(len(panels) / columns))
  fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.2 * rows),
                           dpi=100, squeeze=False)
  for ax, (title, inside, candidates) in zip(axes.flat, panels):
    inside = np.asarray(inside, np.float64)
    candidates = np.asarray(candidates, np.float64)
    edges = np.histogram_bin_edges(np.concatenate([inside, candidates]),
                                   bins=bins)
    ax.hist(inside, bins=edges, density=True, alpha=0.55,
            label=in_distribution_label)
    ax.hist(candidates, bins=edges, density=True, alpha=0.55,
            label=candidates_label)
    ax.set_title(title, fontsize=9)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
  for ax in list(axes.flat)[len(panels):]:
    ax.axis('off')
  axes.flat[0].legend(fontsize=7)
  fig.tight_layout()
  buffer = io.BytesIO()
  fig.savefig(buffer, format='png')
  plt.close(fig)
  atomic_files.atomic_write_bytes(path, buffer.getvalue())
