"""The per-pixel histogram baseline every density model must beat.

Each dimension (pixel and channel) gets its own categorical distribution
over the L levels, fit on the training images by counting with an additive
pseudocount (Laplace smoothing for pseudocount 1):

  p_d(v) = (count_d(v) + a) / (N + a * L)

The score is the mean negative log2-likelihood of the test images per
dimension, in bits/dim. It ignores all correlations between pixels, so a
model that does not beat it has learnt nothing beyond pixel marginals.
"""

import numpy as np

from tfp_flowpp.data.errors import DataError

__all__ = ['per_pixel_histogram_bpd']

_CHUNK = 2048


def per_pixel_histogram_bpd(train_images, test_images, num_levels,
                            pseudocount=1.0):
  """Bits/dim of the test images under per-dimension train histograms.

  Args:
    train_images: Integer array ``[N, ...]`` with values in ``[0, L)``;
      N may be 0 (then every level gets probability 1/L).
    test_images: Integer array ``[M, ...]``, same per-example shape.
    num_levels: L, the number of pixel levels.
    pseudocount: Count added to every level of every dimension (>= 0;
      0 gives the unsmoothed maximum-likelihood histogram, which is
      infinite on levels never seen in training).

  Returns:
    Python float, bits per dimension.

  Raises:
    DataError: mismatched shapes, out-of-range values or bad arguments.
  """
  train = np.asarray(train_images)
  test = np.asarray(test_images)
  num_levels = int(num_levels)
  if num_levels < 2:
    raise DataError(f'num_levels must be >= 2, got {num_levels}.')
  if pseudocount < 0:
    raise DataError(f'pseudocount must be >= 0, got {pseudocount}.')
  if train.shape[1:] != test.shape[1:]:
    raise DataError(f'train images {train.shape[1:]} and test images '
                    f'{test.shape[1:]} differ in shape.')
  if len(test) == 0:
    raise DataError('test_images is empty; pass at least one image.')
  if len(train) == 0 and pseudocount == 0:
    raise DataError('no training images and pseudocount=0 leave the '
                    'histogram undefined; use pseudocount > 0.')
  for what, a in (('train', train), ('test', test)):
    if a.size and not np.issubdtype(a.dtype, np.integer):
      raise DataError(f'{what} images must be integers, got {a.dtype}.')
    if a.size and (a.min() < 0 or a.max() >= num_levels):
      raise DataError(f'{what} images have values in [{a.min()}, {a.max()}] '
                      f'outside [0, {num_levels}); pass the right '
                      f'num_levels.')

  dims = int(np.prod(train.shape[1:]))
  offsets = np.arange(dims, dtype=np.int64) * num_levels
  counts = np.zeros(dims * num_levels, np.float64)
  flat_train = train.reshape(len(train), dims)
  for i in range(0, len(flat_train), _CHUNK):
    chunk = flat_train[i:i + _CHUNK].astype(np.int64) + offsets
    counts += np.bincount(chunk.ravel(), minlength=dims * num_levels)
  with np.errstate(divide='ignore'):
    log_probs = (np.log2(counts + pseudocount) -
                 np.log2(len(train) + pseudocount * num_levels))

  flat_test = test.reshape(len(test), dims)
  total = 0.
  for i in range(0, len(flat_test), _CHUNK):
    chunk = flat_test[i:i + _CHUNK].astype(np.int64) + offsets
    total += log_probs[chunk].sum()
  return float(-total / (len(test) * dims))
