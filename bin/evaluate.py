#!/usr/bin/env python3
"""Bits/dim and OOD scores of any images under a trained model.

    bin/evaluate --workdir=RUN                      # the run's test split
    bin/evaluate --workdir=RUN --dataset=folder:DIR --output=scores.csv
    bin/evaluate --workdir=RUN --dataset=digits --image_size=28 \\
        --background_workdir=BACKGROUND_RUN --output=scores.npz

Scores the run's own split (``--split``, default test) or any other source
(``--dataset`` with ``--classes``, ``--num_bits``, ``--image_size`` as in
bin/train; default every image of it) with the EMA weights, one image at a
time: the single-sample and the importance-weighted dequantization bound
(the paper's number; official k = 4096) and the out-of-distribution scores
of `tfp_flowpp.scoring` (higher = more anomalous): the raw bound, the
typicality statistic |bpd − Ĥ| against the run's training images
(Nalisnick et al. 2019), the input-complexity-corrected bpd − L(x)/D for
PNG and WebP (Serrà et al. 2020) and, with ``--background_workdir``, the
likelihood ratio bpd − bpd_background (Ren et al. 2019).

It prints the mean bounds, a summary (mean, std, quantiles) of every column
and the typicality test of all scored images as one batch (bootstrap
p-value); ``--output=FILE.csv|FILE.npz`` writes one row per image (index,
label and source path when known, every column). Images that do not fit the
model stop with a one-line error naming the flag that fixes it. Scoring the
run's own data also appends the means to the workdir's metrics.jsonl.

A long pass resumes: every finished batch is kept in WORKDIR/scoring/ until
the pass completes, and rerunning an interrupted command (Ctrl-C, SIGKILL)
scores only the rest, with exactly the numbers of an uninterrupted pass
(``--noresume`` keeps nothing).

A class-conditional model (``--conditioning=class``) is evaluated on its own
data: the class-conditional bounds log P(x | y) with the true labels, the
marginal bound log Σ_y P(x | y) p(y) (comparable with an unconditional
model's) and the Bayes classifier argmax_y P(x | y) p(y) (accuracy; p(y) =
the training class frequencies). With ``--dataset``, ``--output`` or
``--background_workdir`` it is scored like an unconditional model, on the
marginal bound (no labels needed; K bounds per image).
"""

import time

from absl import flags

import _scoring  # pylint: disable=g-bad-import-order
import _tool
import flowpp_flags

flowpp_flags.define_workdir_flag()
flowpp_flags.define_precision_flag()
_scoring.define_source_flags('dataset', '', 'Images to score')
_scoring.define_scoring_flags(num_samples_default=64)
flags.DEFINE_string(
    'output', None,
    'Write one row per image to this .csv or .npz file: index, label and '
    'path when known, bpd, bpd_iw and every OOD score.')
flags.DEFINE_integer(
    'classifier_samples', 1, 'Class-conditional models: importance samples '
    'per class of the Bayes classifier and the marginal bound.',
    lower_bound=1)
FLAGS = flags.FLAGS


def main():
  from tfp_flowpp import scoring  # pylint: disable=g-import-not-at-top
  from tfp_flowpp import training  # pylint: disable=g-import-not-at-top
  if FLAGS.output and not FLAGS.output.lower().endswith(scoring.FORMATS):
    raise ValueError(f'--output must be a .csv or .npz file, got '
                     f'{FLAGS.output}.')
  model, configs, step = _tool.load(FLAGS.workdir)
  conditional = model.num_classes is not None
  if conditional and not (FLAGS.dataset or FLAGS.output or
                          FLAGS.background_workdir or
                          FLAGS.complexity_workdir):
    return _evaluate_conditional(model, configs, step)
  options = _scoring.source_options('dataset', '')
  source = _scoring.load_source(configs, options, FLAGS.max_images,
                                FLAGS.batch_size)
  _scoring.check_matches(source, model, '', options.num_bits is not None)
  scorer = _scoring.make_scorer(model)
  workdir = _scoring.resume_workdir()
  typicality, reference = _scoring.fit_typicality(
      scorer, configs, FLAGS.reference_images, workdir)
  columns, seconds = _scoring.score(scorer, source, typicality, workdir)

  k = FLAGS.num_samples
  print(f'{source.description} ({source.count} images, step {step}, EMA '
        'weights' + (f', class-conditional: marginal bound over '
                     f'{model.num_classes} classes' if conditional else '')
        + '):')
  print(f'  single-sample bound        {columns["bpd"].mean():.4f} bits/dim')
  if 'bpd_iw' in columns:
    print(f'  importance-weighted (k={k:<5}) {columns["bpd_iw"].mean():.4f} '
          f'bits/dim  [{seconds:.1f}s]')
  print('Per image (OOD scores: ' + ', '.join(scorer.score_names(typicality))
        + '; higher = more anomalous):')
  print(_scoring.text_table(_scoring.SUMMARY_HEADERS,
                            _scoring.summary_rows(columns)))
  result = typicality.test(columns[scorer.config.score_column])
  print(f'Typicality test of all {result.batch_size} images as one batch '
        f'({reference}): |mean {scorer.config.score_column} − Ĥ| = '
        f'{result.statistic:.4f} (Ĥ = {typicality.entropy_bpd:.4f}), '
        f'threshold {result.threshold:.4f} at α = {result.alpha}, p = '
        f'{result.p_value:.4g}: '
        + ('NOT typical of the training data.' if result.out_of_distribution
           else 'typical of the training data.'))
  if FLAGS.output:
    scoring.write_scores(FLAGS.output, _scoring.output_columns(source, columns))
    print(f'Wrote {source.count} rows to {FLAGS.output}')
  if source.own and not conditional:  # Its test_bpd is log P(x | y).
    split = source.split
    record = {
        'step': step,
        'source': 'bin/evaluate',
        'split': split,
        f'{split}_bpd': float(columns['bpd_iw' if k > 1 else 'bpd'].mean()),
        f'{split}_bpd_single_sample': float(columns['bpd'].mean()),
        f'{split}_num_samples': k,
        'num_images': source.count,
        'wall_time': time.time(),
    }
    training.Workdir(FLAGS.workdir).append_metrics(record)


def _evaluate_conditional(model, configs, step):
  """Class-conditional bits/dim, marginal bound and Bayes classifier."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tfp_flowpp import training  # pylint: disable=g-import-not-at-top
  split = FLAGS.split or 'test'
  if split == 'all':
    raise ValueError('class-conditional models are evaluated on one split; '
                     'use --split=train, validation or test.')
  data = _tool.dataset(configs)
  evaluator = training.BpdEvaluator(model, seed=FLAGS.seed)
  batches = data.eval_batches(split, FLAGS.batch_size, with_labels=True)
  single = evaluator.evaluate(batches, 1, max_images=FLAGS.max_images)
  iw = evaluator.evaluate(batches, FLAGS.num_samples,
                          max_images=FLAGS.max_images)
  if FLAGS.max_images:
    batches = batches.unbatch().take(FLAGS.max_images).batch(FLAGS.batch_size)
  log_likelihoods = tf.function(lambda x, seed: model.class_log_likelihoods(
      x, num_samples=FLAGS.classifier_samples, seed=seed))
  correct = total = 0
  marginal = 0.
  for i, (x, y) in enumerate(batches):
    joint = log_likelihoods(x, tf.constant([FLAGS.seed, i])) + (
        model.log_class_frequencies)
    correct += int(np.sum(np.argmax(joint, axis=-1) == y.numpy()))
    total += int(x.shape[0])
    marginal += float(tf.reduce_sum(model.nats_to_bits_per_dim(
        tf.reduce_logsumexp(joint, axis=-1))))
  k, c = FLAGS.num_samples, FLAGS.classifier_samples
  print(f'{data.name} {split} ({single["num_images"]} images, step {step}, '
        f'EMA weights, class-conditional, true labels):')
  print(f'  single-sample bound        {single["bpd"]:.4f} bits/dim')
  print(f'  importance-weighted (k={k:<5}) {iw["bpd"]:.4f} bits/dim  '
        f'[{iw["seconds"]:.1f}s]')
  print(f'  marginal bound (k={c:<5})      {marginal / total:.4f} bits/dim  '
        '(log sum_y P(x|y) p(y))')
  print(f'  Bayes-classifier accuracy   {correct / total:.4f}  ({total} '
        'images)')
  training.Workdir(FLAGS.workdir).append_metrics({
      'step': step,
      'source': 'bin/evaluate',
      'split': split,
      f'{split}_bpd': iw['bpd'] if k > 1 else single['bpd'],
      f'{split}_bpd_single_sample': single['bpd'],
      f'{split}_num_samples': k,
      f'{split}_accuracy': correct / total,
      f'{split}_marginal_bpd': marginal / total,
      'num_images': iw['num_images'],
      'wall_time': time.time(),
  })


if __name__ == '__main__':
  _tool.run(main, 'evaluate')
