"""The built-in default source: scikit-learn's 8x8 handwritten digits.

1,797 real 8x8 grayscale images with integer values 0..16 (17 levels),
labels 0-9, shipped inside scikit-learn, so it needs no download. It has no
official test split; `DataConfig.test_size` holds one out.
"""

import numpy as np

from tfp_flowpp.data.raw_data import RawData

__all__ = ['NUM_LEVELS', 'load_digits']

NUM_LEVELS = 17


def load_digits():
  """Returns the digits as `RawData` (uint8 ``[1797, 8, 8, 1]``)."""
  from sklearn import datasets  # pylint: disable=g-import-not-at-top
  bunch = datasets.load_digits()
  images = np.rint(bunch.images).astype(np.uint8)[..., None]
  assert images.max() < NUM_LEVELS
  return RawData(
      name='digits',
      images=images,
      labels=bunch.target.astype(np.int64),
      num_levels=NUM_LEVELS,
      class_names=[str(i) for i in range(10)])
