#!/usr/bin/env python3
"""How well each score separates candidates from in-distribution images.

    bin/score --workdir=RUN --candidates=SOURCE
    bin/score --workdir=RUN --in_distribution=fashion_mnist \\
        --in_distribution_split=test --candidates=npz:mnist.npz \\
        --background_workdir=BACKGROUND_RUN --typicality_batch_sizes=1,10

Scores both sets with the run's EMA weights (as bin/evaluate does) and
reports, for every OOD score (higher = more anomalous: raw bits/dim,
typicality, input-complexity-corrected bits/dim per codec, likelihood ratio
with ``--background_workdir``), the AUROC and AUPR of telling the candidates
(positives) from the in-distribution images (`sklearn.metrics`; AUROC 0.5 is
chance, below 0.5 the score prefers the candidates). The typicality test is
also scored on batches of M images (``--typicality_batch_sizes``): disjoint
random batches of each set, one statistic per batch.

The in-distribution set defaults to the run's own test split; both sets
take bin/train's data-source forms and the ``--*_classes``, ``--*_num_bits``,
``--*_image_size``, ``--*_split`` flags. It prints a table, writes it with
``--table=FILE.md|FILE.csv``, and writes a histogram figure of both sets'
scores (``--figure``, default WORKDIR/figures/ood_<candidates>.png). Each
set's pass resumes after an interruption, as in bin/evaluate.
"""

import csv
import io
import os
import re

from absl import flags

import _scoring  # pylint: disable=g-bad-import-order
import _tool
import flowpp_flags

flowpp_flags.define_workdir_flag()
flowpp_flags.define_precision_flag()
_scoring.define_source_flags('in_distribution', 'in_distribution_',
                             'In-distribution images')
_scoring.define_source_flags('candidates', 'candidates_', 'Candidate images')
flags.mark_flag_as_required('candidates')
_scoring.define_scoring_flags(num_samples_default=1)
flags.DEFINE_list(
    'typicality_batch_sizes', ['1'],
    'Batch sizes M of the typicality test to score (1 = per image).')
flags.DEFINE_string(
    'figure', None, 'Histogram PNG (default '
    'WORKDIR/figures/ood_<candidates>.png).')
flags.DEFINE_string('table', None, 'Also write the table to FILE.md or '
                    'FILE.csv.')
FLAGS = flags.FLAGS

HEADERS = ('score', 'AUROC', 'AUPR', 'in-distribution mean ± std',
           'candidates mean ± std', 'n in / candidates')


def _batch_sizes():
  try:
    sizes = [int(v) for v in FLAGS.typicality_batch_sizes]
  except ValueError:
    sizes = [0]
  if not sizes or min(sizes) < 1:
    raise ValueError('--typicality_batch_sizes must be integers >= 1, got '
                     f'{",".join(FLAGS.typicality_batch_sizes)}.')
  return sizes


def _evaluations(scorer, typicality, inside, candidates):
  """[(label, in-distribution scores, candidate scores)] of every score."""
  column = scorer.config.score_column
  out = []
  for name in scorer.score_names(typicality):
    if name != 'typicality':
      out.append((name, inside[name], candidates[name]))
      continue
    for m in _batch_sizes():
      if m == 1:
        out.append(('typicality (M=1)', inside[name], candidates[name]))
        continue
      out.append((f'typicality (M={m})',
                  typicality.batch_statistics(inside[column], m, FLAGS.seed),
                  typicality.batch_statistics(candidates[column], m,
                                              FLAGS.seed)))
  return out


def _write_table(path, rows):
  from tfp_flowpp.training import atomic_files  # pylint: disable=g-import-not-at-top
  if path.lower().endswith('.md'):
    lines = ['| ' + ' | '.join(HEADERS) + ' |',
             '|' + '|'.join(['---'] + ['---:'] * (len(HEADERS) - 1)) + '|']
    lines += ['| ' + ' | '.join(map(str, r)) + ' |' for r in rows]
    payload = '\n'.join(lines) + '\n'
  else:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator='\n')
    writer.writerow(HEADERS)
    writer.writerows(rows)
    payload = buffer.getvalue()
  atomic_files.atomic_write_bytes(path, payload.encode('utf-8'))


def main():
  from tfp_flowpp import scoring  # pylint: disable=g-import-not-at-top
  if FLAGS.table and not FLAGS.table.lower().endswith(('.md', '.csv')):
    raise ValueError(f'--table must be a .md or .csv file, got {FLAGS.table}.')
  if FLAGS.figure and not FLAGS.figure.lower().endswith('.png'):
    raise ValueError(f'--figure must be a .png file, got {FLAGS.figure}.')
  _batch_sizes()
  model, configs, step = _tool.load(FLAGS.workdir)
  sources = []
  for flag, prefix in (('in_distribution', 'in_distribution_'),
                       ('candidates', 'candidates_')):
    options = _scoring.source_options(flag, prefix)
    source = _scoring.load_source(configs, options, FLAGS.max_images,
                                  FLAGS.batch_size)
    _scoring.check_matches(source, model, prefix,
                           options.num_bits is not None)
    sources.append(source)
  inside_source, candidate_source = sources
  scorer = _scoring.make_scorer(model)
  workdir = _scoring.resume_workdir()
  typicality, _ = _scoring.fit_typicality(scorer, configs,
                                          FLAGS.reference_images, workdir)
  inside, _ = _scoring.score(scorer, inside_source, typicality, workdir)
  candidates, _ = _scoring.score(scorer, candidate_source, typicality,
                                 workdir)

  rows, panels = [], []
  for label, a, b in _evaluations(scorer, typicality, inside, candidates):
    result = scoring.detection_metrics(a, b)
    rows.append([label, f'{result["auroc"]:.4f}', f'{result["aupr"]:.4f}',
                 f'{_scoring.fmt(a.mean())} ± {_scoring.fmt(a.std())}',
                 f'{_scoring.fmt(b.mean())} ± {_scoring.fmt(b.std())}',
                 f'{len(a)} / {len(b)}'])
    panels.append((f'{label}: AUROC {result["auroc"]:.3f}', a, b))
  print(f'In-distribution: {inside_source.description}; candidates: '
        f'{candidate_source.description}; step {step}, EMA weights '
        '(candidates are positives; higher score = more anomalous):')
  print(_scoring.text_table(HEADERS, rows))

  figure = FLAGS.figure or os.path.join(
      FLAGS.workdir, 'figures',
      'ood_' + re.sub(r'[^A-Za-z0-9]+', '_',
                      candidate_source.description).strip('_') + '.png')
  scoring.plot_score_histograms(panels, figure,
                                inside_source.description,
                                candidate_source.description)
  print(f'Wrote {figure}')
  if FLAGS.table:
    _write_table(FLAGS.table, rows)
    print(f'Wrote {FLAGS.table}')


if __name__ == '__main__':
  _tool.run(main, 'score')
