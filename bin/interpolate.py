#!/usr/bin/env python3
"""Latent interpolations between real images: bin/interpolate --workdir=DIR --out=FILE.png.

Each row encodes two random images of the split, interpolates linearly in the
latent space and decodes (Glow/Flow++ figures); the first and last columns are
the real images themselves.
"""

from absl import flags

import _tool  # pylint: disable=g-bad-import-order
import flowpp_flags

flowpp_flags.define_workdir_flag()
flowpp_flags.define_precision_flag()
flags.DEFINE_string('out', None, 'Output PNG path.', required=True)
flags.DEFINE_integer('num_pairs', 8, 'Rows (image pairs).', lower_bound=1)
flags.DEFINE_integer(
    'num_steps', 10, 'Images per row, ends included.', lower_bound=2)
flags.DEFINE_enum('split', 'test', ['train', 'validation', 'test'],
                  'Split to take the real images from.')
flags.DEFINE_integer('seed', 0, 'Seed choosing the pairs.')
FLAGS = flags.FLAGS


def main():
  import numpy as np  # pylint: disable=g-import-not-at-top
  from tfp_flowpp.training import figures  # pylint: disable=g-import-not-at-top
  if not FLAGS.out.lower().endswith('.png'):
    raise ValueError(f'--out must be a .png file, got {FLAGS.out}.')
  model, configs, _ = _tool.load(FLAGS.workdir)
  data = _tool.dataset(configs)
  images = np.concatenate(
      [b.numpy() for b in data.eval_batches(FLAGS.split, 512).take(8)])
  if len(images) < 2:
    raise ValueError(f'The {FLAGS.split} split has fewer than two images.')
  rng = np.random.default_rng(FLAGS.seed)
  pairs = np.stack([
      rng.choice(len(images), 2, replace=False) for _ in range(FLAGS.num_pairs)
  ])
  rows = model.interpolate(
      images[pairs[:, 0]], images[pairs[:, 1]],
      num_steps=FLAGS.num_steps).numpy()
  figures.save_image_grid(
      rows.reshape(-1, *rows.shape[2:]),
      FLAGS.out,
      model.num_levels,
      columns=FLAGS.num_steps)
  print(f'Wrote {FLAGS.num_pairs} interpolations x {FLAGS.num_steps} steps to '
        f'{FLAGS.out}')


if __name__ == '__main__':
  _tool.run(main, 'interpolate')
