#!/usr/bin/env python3
"""Losslessly compresses images with a trained model.

    bin/compress --workdir=RUN --input=SOURCE --output=FILE [--split=all]

SOURCE is any data source bin/train accepts (``digits``, ``folder:DIR``,
``npz:FILE``, ``idx:DIR``, a TFDS name); the images get the run's data
transforms (``image_size``, ``num_bits``, ``classes``). ``--split=all``
(default) takes every image of the source in its own order; ``train``,
``validation`` or ``test`` take that split as bin/train made it. The output
is written through a temporary file and a rename. At the end the tool prints
the actual bits/dim of the file next to the model's single-sample bound on
the same images. Decompress with bin/decompress and the same workdir.
"""

import sys

from absl import flags

import _tool  # pylint: disable=g-bad-import-order
import flowpp_flags

flowpp_flags.define_workdir_flag()
flags.DEFINE_string('input', None, 'Data source of the images (as --dataset '
                    'of bin/train): digits, folder:DIR, npz:FILE, idx:DIR or '
                    'a TFDS name.', required=True)
flags.DEFINE_string('output', None, 'Compressed file to write.',
                    required=True)
flags.DEFINE_enum('split', 'all', ['all', 'train', 'validation', 'test'],
                  'Images of the source to compress: all (in source order) or '
                  'one split as bin/train makes it.')
flags.DEFINE_integer('max_images', 0, 'Compress only the first N images '
                     '(0 = all).', lower_bound=0)
flags.DEFINE_integer('grid_bits', 20, 'Coding grid: bins of width '
                     '2^-grid_bits.', lower_bound=8, upper_bound=40)
flags.DEFINE_integer('noise_bits', 12, 'Local bits-back noise 2^-noise_bits.',
                     lower_bound=2, upper_bound=36)
flags.DEFINE_integer('max_batch_size', 64, 'Images coded in parallel once '
                     'the stream is long enough.', lower_bound=1,
                     upper_bound=65535)
flags.DEFINE_integer('threads', 0, 'TensorFlow intra-op threads (0 = all '
                     'available cores); stored in the file, decompression '
                     'uses the same number.', lower_bound=0, upper_bound=255)
FLAGS = flags.FLAGS


def load_images(source, data_config, split):
  """uint8 ``[N, H, W, C]`` images of ``source`` with the run's transforms."""
  import dataclasses  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from tfp_flowpp import data as data_lib  # pylint: disable=g-import-not-at-top
  from tfp_flowpp.data import loader  # pylint: disable=g-import-not-at-top
  from tfp_flowpp.data import tfds_source  # pylint: disable=g-import-not-at-top
  from tfp_flowpp.data import transforms  # pylint: disable=g-import-not-at-top
  config = dataclasses.replace(data_config, dataset=source)
  if split != 'all':
    return loader.load_dataset(config).arrays(split)
  raw = loader.load_raw(config)
  if isinstance(raw, tfds_source.TfdsSource):
    if not raw.fits_in_memory():
      raise data_lib.DataError(f'{source!r} is too big to hold in memory; '
                               'pass --split to compress one split.')
    raw = raw.to_raw()
  parts = [(raw.images, raw.labels)]
  if raw.test_images is not None:
    parts.append((raw.test_images, raw.test_labels))
  out = []
  for images, labels in parts:
    images, _ = transforms.filter_classes(
        images, labels, config.classes, raw.name, raw.class_names,
        check_present=False)
    size = config.image_size
    if size is not None and images.shape[1:3] != (size, size):
      images = transforms.center_crop_resize_np(images, size, raw.num_levels)
    out.append(transforms.reduce_bits(images, config.num_bits))
  return np.concatenate(out)


def main():
  from tfp_flowpp import compression  # pylint: disable=g-import-not-at-top
  from tfp_flowpp import data as data_lib  # pylint: disable=g-import-not-at-top
  from tfp_flowpp import training  # pylint: disable=g-import-not-at-top
  from tfp_flowpp.compression import environment  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  # One tf.function per coupling traces once each; TF would warn about
  # "frequent retracing" of the shared Python code.
  tf.get_logger().setLevel('ERROR')
  if FLAGS.noise_bits > FLAGS.grid_bits - 4:
    raise ValueError(f'--noise_bits must be at most --grid_bits - 4 = '
                     f'{FLAGS.grid_bits - 4}, got {FLAGS.noise_bits}.')
  environment.configure(FLAGS.threads or environment.intra_op_threads())
  config = compression.CodingConfig(
      grid_bits=FLAGS.grid_bits,
      noise_bits=FLAGS.noise_bits,
      max_batch_size=FLAGS.max_batch_size)
  model, configs, step = _tool.load(FLAGS.workdir)
  model_config = training.Workdir(FLAGS.workdir).model_config()
  images = load_images(FLAGS.input, data_lib.DataConfig(**configs['data']),
                       FLAGS.split)
  if FLAGS.max_images:
    images = images[:FLAGS.max_images]
  codec = compression.Codec(model, model_config, config)
  print(f'Compressing {len(images)} images of {FLAGS.input} '
        f'({FLAGS.split}) with the step-{step} model in {FLAGS.workdir}',
        flush=True)
  data, stats = codec.compress(
      images, progress=compression.ProgressPrinter('compressed'))
  compression.write_atomic(FLAGS.output, data)
  print(f'Wrote {FLAGS.output}')
  print(compression.summary(stats, 'compression  '))


if __name__ == '__main__':
  sys.exit(_tool.run(main, 'compress'))
