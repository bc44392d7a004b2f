#!/usr/bin/env python3
"""Samples a PNG grid: bin/sample --workdir=DIR --num=64 --temperature=0.7 --out=FILE.png."""

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
FLAGS = flags.FLAGS


def main():
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tfp_flowpp.training import figures  # pylint: disable=g-import-not-at-top
  if FLAGS.temperature <= 0:
    raise ValueError(f'--temperature must be > 0, got {FLAGS.temperature}.')
  if not FLAGS.out.lower().endswith('.png'):
    raise ValueError(f'--out must be a .png file, got {FLAGS.out}.')
  model, _, step = _tool.load(FLAGS.workdir)
  sample = tf.function(lambda: model.sample(
      FLAGS.num,
      seed=tf.constant([FLAGS.seed, 0]),
      temperature=FLAGS.temperature))
  try:
    images = sample().numpy()
  except tf.errors.InvalidArgumentError as e:  # Non-finite decoded values.
    raise ValueError(e.message.strip().splitlines()[0]) from e
  figures.save_image_grid(
      images, FLAGS.out, model.num_levels, columns=FLAGS.columns or None)
  if FLAGS.npy:
    np.save(FLAGS.npy, images)
  print(f'Wrote {FLAGS.num} samples (T={FLAGS.temperature}, step {step}) to '
        f'{FLAGS.out}')


if __name__ == '__main__':
  _tool.run(main, 'sample')
