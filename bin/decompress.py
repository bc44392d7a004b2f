#!/usr/bin/env python3
"""Restores images compressed by bin/compress, bit for bit.

    bin/decompress --workdir=RUN --input=FILE --output=DIR|FILE.npz

``--output`` ending in ``.npz`` gets one uint8 array ``images`` [N, H, W, C]
and ``num_levels`` (readable back as ``npz:FILE``); anything else is a new
directory of PNGs ``000000.png``, … holding the raw pixel levels (grayscale
or RGB). Both are written under a temporary name and renamed when complete;
an existing non-empty directory is never written into. The workdir must be
the one that compressed the file (its fingerprint is checked), and every
decoded pixel is checked against the file's checksum before anything is
written.
"""

import os
import shutil
import sys
import tempfile

from absl import flags

import _tool  # pylint: disable=g-bad-import-order
import flowpp_flags

flowpp_flags.define_workdir_flag()
flags.DEFINE_string('input', None, 'Compressed file from bin/compress.',
                    required=True)
flags.DEFINE_string('output', None, 'Output: FILE.npz, or a directory for '
                    'PNG files.', required=True)
FLAGS = flags.FLAGS


def write_npz(path, images, num_levels):
  import io  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from tfp_flowpp import compression  # pylint: disable=g-import-not-at-top
  buffer = io.BytesIO()
  np.savez(buffer, images=images, num_levels=np.int64(num_levels))
  compression.write_atomic(path, buffer.getvalue())


def write_pngs(directory, images):
  """Writes PNGs into a temporary sibling directory, then renames it."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  channels = images.shape[-1]
  if channels not in (1, 3):
    raise ValueError(f'{channels}-channel images cannot be PNGs; use '
                     '--output=FILE.npz.')
  directory = os.path.abspath(directory)
  if os.path.exists(directory) and (not os.path.isdir(directory) or
                                    os.listdir(directory)):
    raise ValueError(f'{directory} exists and is not an empty directory; '
                     'choose a new --output.')
  parent = os.path.dirname(directory)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(dir=parent, prefix='.tmp-')
  try:
    width = max(6, len(str(len(images) - 1)))
    for i, image in enumerate(images):
      array = image[..., 0] if channels == 1 else image
      Image.fromarray(array, mode='L' if channels == 1 else 'RGB').save(
          os.path.join(tmp, f'{i:0{width}d}.png'))
    if os.path.isdir(directory):
      os.rmdir(directory)  # Empty (checked above).
    os.rename(tmp, directory)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise


def main():
  from tfp_flowpp import compression  # pylint: disable=g-import-not-at-top
  from tfp_flowpp import training  # pylint: disable=g-import-not-at-top
  from tfp_flowpp.compression import environment  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  # One tf.function per coupling traces once each; TF would warn about
  # "frequent retracing" of the shared Python code.
  tf.get_logger().setLevel('ERROR')
  with open(FLAGS.input, 'rb') as f:
    data = f.read()
  header = compression.read_header(data, FLAGS.input)
  # The decoder must run with the compressor's thread count, set before
  # TensorFlow starts.
  environment.configure(header.threads)
  model, _, step = _tool.load(FLAGS.workdir)
  model_config = training.Workdir(FLAGS.workdir).model_config()
  codec = compression.Codec(model, model_config)
  codec.check_header(header, FLAGS.input)
  print(f'Decompressing {header.num_images} images from {FLAGS.input} with '
        f'the step-{step} model in {FLAGS.workdir}', flush=True)
  images, stats = codec.decompress(
      data,
      progress=compression.ProgressPrinter('decompressed'),
      name=FLAGS.input)
  if FLAGS.output.lower().endswith('.npz'):
    write_npz(FLAGS.output, images, codec.num_levels)
  else:
    write_pngs(FLAGS.output, images)
  print(f'Wrote {len(images)} images to {FLAGS.output} (pixel checksum '
        'verified)')
  print(compression.summary(stats, 'decompression'))


if __name__ == '__main__':
  sys.exit(_tool.run(main, 'decompress'))
