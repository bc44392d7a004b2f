#!/usr/bin/env python3
"""Bits/dim of a trained model: bin/evaluate --workdir=DIR [--split=test].

Reports the single-sample and the importance-weighted dequantization bound
(the paper's number; official k = 4096) with the EMA weights, prints both and
appends them to the workdir's metrics.jsonl. For a class-conditional model
the bounds are class-conditional (log P(x | y) with the true labels), and it
also reports the Bayes classifier argmax_y P(x | y) p(y) (test accuracy;
p(y) = the training class frequencies) and the marginal bound
log Σ_y P(x | y) p(y), comparable with an unconditional model's.
"""

import time

from absl import flags

import _tool  # pylint: disable=g-bad-import-order
import flowpp_flags

flowpp_flags.define_workdir_flag()
flags.DEFINE_enum('split', 'test', ['train', 'validation', 'test'],
                  'Split to evaluate.')
flags.DEFINE_integer(
    'num_samples',
    64, 'Importance samples k for the importance-weighted bound '
    '(the paper uses 4096).',
    lower_bound=1)
flags.DEFINE_integer(
    'batch_size', 256, 'Images per evaluation batch.', lower_bound=1)
flags.DEFINE_integer(
    'max_images',
    0,
    'Evaluate only the first N images of the split (0 = all).',
    lower_bound=0)
flags.DEFINE_integer('seed', 0, 'Seed of the dequantization noise.')
flags.DEFINE_integer(
    'classifier_samples', 1, 'Class-conditional models: importance samples '
    'per class of the Bayes classifier and the marginal bound.',
    lower_bound=1)
FLAGS = flags.FLAGS


def main():
  from tfp_flowpp import training  # pylint: disable=g-import-not-at-top
  model, configs, step = _tool.load(FLAGS.workdir)
  data = _tool.dataset(configs)
  evaluator = training.BpdEvaluator(model, seed=FLAGS.seed)
  conditional = model.num_classes is not None
  batches = data.eval_batches(FLAGS.split, FLAGS.batch_size,
                              with_labels=conditional)
  single = evaluator.evaluate(batches, 1, max_images=FLAGS.max_images)
  iw = evaluator.evaluate(
      batches, FLAGS.num_samples, max_images=FLAGS.max_images)
  print(f'{data.name} {FLAGS.split} ({single["num_images"]} images, step '
        f'{step}, EMA weights):')
  print(f'  single-sample bound        {single["bpd"]:.4f} bits/dim')
  print(f'  importance-weighted (k={FLAGS.num_samples:<5}) {iw["bpd"]:.4f} '
        f'bits/dim  [{iw["seconds"]:.1f}s]'
        + ('  (class-conditional, true labels)' if conditional else ''))
  classes = _classify(model, batches) if conditional else None
  if classes:
    print(f'  marginal bound (k={FLAGS.classifier_samples:<5})      '
          f'{classes["marginal_bpd"]:.4f} bits/dim  (log sum_y P(x|y) p(y))')
    print(f'  Bayes-classifier accuracy   {classes["accuracy"]:.4f}  '
          f'({classes["num_images"]} images)')
  record = {
      'step': step,
      'source': 'bin/evaluate',
      'split': FLAGS.split,
      f'{FLAGS.split}_bpd': iw['bpd'],
      f'{FLAGS.split}_bpd_single_sample': single['bpd'],
      f'{FLAGS.split}_num_samples': FLAGS.num_samples,
      'num_images': iw['num_images'],
      'wall_time': time.time(),
  }
  if classes:
    record[f'{FLAGS.split}_accuracy'] = classes['accuracy']
    record[f'{FLAGS.split}_marginal_bpd'] = classes['marginal_bpd']
  training.Workdir(FLAGS.workdir).append_metrics(record)


def _classify(model, batches):
  """Bayes-classifier accuracy and marginal bits/dim over labelled batches."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
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
  return {'accuracy': correct / total, 'marginal_bpd': marginal / total,
          'num_images': total}


if __name__ == '__main__':
  _tool.run(main, 'evaluate')
