#!/usr/bin/env python3
"""Bits/dim of a trained model: bin/evaluate --workdir=DIR [--split=test].

Reports the single-sample and the importance-weighted dequantization bound
(the paper's number; official k = 4096) with the EMA weights, prints both and
appends them to the workdir's metrics.jsonl.
"""

import time

from absl import flags

import _tool  # pylint: disable=g-bad-import-order
import flowpp_flags

flowpp_flags.define_workdir_flag()
flowpp_flags.define_precision_flag()
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
FLAGS = flags.FLAGS


def main():
  from tfp_flowpp import training  # pylint: disable=g-import-not-at-top
  model, configs, step = _tool.load(FLAGS.workdir)
  data = _tool.dataset(configs)
  evaluator = training.BpdEvaluator(model, seed=FLAGS.seed)
  batches = data.eval_batches(FLAGS.split, FLAGS.batch_size)
  single = evaluator.evaluate(batches, 1, max_images=FLAGS.max_images)
  iw = evaluator.evaluate(
      batches, FLAGS.num_samples, max_images=FLAGS.max_images)
  print(f'{data.name} {FLAGS.split} ({single["num_images"]} images, step '
        f'{step}, EMA weights):')
  print(f'  single-sample bound        {single["bpd"]:.4f} bits/dim')
  print(f'  importance-weighted (k={FLAGS.num_samples:<5}) {iw["bpd"]:.4f} '
        f'bits/dim  [{iw["seconds"]:.1f}s]')
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
  training.Workdir(FLAGS.workdir).append_metrics(record)


if __name__ == '__main__':
  _tool.run(main, 'evaluate')
