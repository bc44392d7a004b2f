#!/usr/bin/env python3
"""Samples a PNG grid: bin/sample --workdir=DIR --num=64 --temperature=0.7 --out=FILE.png.

A class-conditional model samples the class --label=3 (a data set label or a
class name), the classes --labels=0,1,2 (one row per class), or, with
neither, one row per class of the model; --num is then the number of
samples per row (rows of --num // number of classes when no label is given).
"""

from absl import flags

import _tool  # pylint: disable=g-bad-import-order
import flowpp_flags

flowpp_flags.define_workdir_flag()
flowpp_flags.define_precision_flag()
flags.DEFINE_integer('num', 64, 'Number of samples.', lower_bound=1)
flags.DEFINE_float(
    'temperature', 0.7,
    'Prior temperature: the latent standard deviation (1.0 = '
    'the model; the Flow++/Glow papers show 0.7).')
flags.DEFINE_string('out', None, 'Output PNG path.', required=True)
flags.DEFINE_integer('seed', 0, 'Sampling seed (same seed, same images).')
flags.DEFINE_integer('columns', 0, 'Grid columns (0 = square).', lower_bound=0)
flags.DEFINE_string('npy', None, 'Also save the integer samples as .npy.')
flags.DEFINE_string(
    'label', None, 'Class-conditional models: sample this class (a data set '
    'label as in --classes, or a class name).')
flags.DEFINE_list(
    'labels', None, 'Class-conditional models: one grid row per listed class '
    '(data set labels or class names).')
FLAGS = flags.FLAGS


def main():
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tfp_flowpp.training import figures  # pylint: disable=g-import-not-at-top
  if FLAGS.temperature <= 0:
    raise ValueError(f'--temperature must be > 0, got {FLAGS.temperature}.')
  if not FLAGS.out.lower().endswith('.png'):
    raise ValueError(f'--out must be a .png file, got {FLAGS.out}.')
  if FLAGS.label is not None and FLAGS.labels:
    raise ValueError('give --label or --labels, not both.')
  model, configs, step = _tool.load(FLAGS.workdir)
  labels, columns, what = None, FLAGS.columns or None, ''
  if FLAGS.label is not None:
    labels = np.full([FLAGS.num], _tool.class_indices(configs,
                                                      [FLAGS.label])[0])
    what = f' of class {FLAGS.label}'
  elif FLAGS.labels or model.num_classes is not None:
    if FLAGS.labels:
      rows = _tool.class_indices(configs, FLAGS.labels)
      columns = FLAGS.num
    else:
      rows = list(range(model.num_classes))
      columns = max(1, FLAGS.num // len(rows))
    labels = np.repeat(rows, columns)
    what = f', one row per class ({len(rows)} classes)'
  num = FLAGS.num if labels is None else len(labels)
  sample = tf.function(lambda: model.sample(
      num,
      seed=tf.constant([FLAGS.seed, 0]),
      temperature=FLAGS.temperature,
      labels=None if labels is None else tf.constant(labels, tf.int32)))
  images = sample().numpy()  # Non-finite values: _tool.run's one-line error.
  figures.save_image_grid(images, FLAGS.out, model.num_levels,
                          columns=columns)
  if FLAGS.npy:
    np.save(FLAGS.npy, images)
  print(f'Wrote {num} samples{what} (T={FLAGS.temperature}, step {step}) to '
        f'{FLAGS.out}')


if __name__ == '__main__':
  _tool.run(main, 'sample')
