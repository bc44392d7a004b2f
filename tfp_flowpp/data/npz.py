"""``npz:FILE``: images saved with ``np.savez``.

Recognised keys:

* images: ``images`` (or ``x``, ``train``, ``x_train``): uint8
  ``[N, H, W]`` or ``[N, H, W, C]``.
* labels: ``labels`` (or ``y``, ``y_train``): integer ``[N]``, optional.
* official test split: ``test_images`` (or ``x_test``) and optionally
  ``test_labels`` (or ``y_test``).
* ``num_levels``: optional scalar, the number of pixel levels when the data
  is not 8-bit (default 256).

Keras' ``mnist.npz`` (``x_train``, ``y_train``, ``x_test``, ``y_test``)
loads as is.
"""

import os
import zipfile

import numpy as np

from tfp_flowpp.data.errors import DataError
from tfp_flowpp.data.raw_data import checked_raw_data

__all__ = ['load_npz']

_IMAGE_KEYS = ('images', 'x', 'train', 'x_train')
_LABEL_KEYS = ('labels', 'y', 'y_train')
_TEST_IMAGE_KEYS = ('test_images', 'x_test')
_TEST_LABEL_KEYS = ('test_labels', 'y_test')


def _first(keys, available):
  for k in keys:
    if k in available:
      return k
  return None


def load_npz(path, name=None):
  """Loads an ``.npz`` file as `RawData`.

  Args:
    path: Path to the ``.npz`` file.
    name: Data set name (default ``'npz:<file stem>'``).

  Returns:
    `RawData`; ``test_images`` in the file make the official test split.

  Raises:
    DataError: missing or unreadable file, no images key (the message lists
      the keys found), wrong dtype or rank, mismatched labels.
  """
  if not os.path.isfile(path):
    raise DataError(f'npz file {path} does not exist; pass an existing .npz '
                    f'file saved with np.savez(FILE, images=...).')
  name = name or 'npz:' + os.path.splitext(os.path.basename(path))[0]
  try:
    with np.load(path, allow_pickle=False) as f:
      arrays = {k: f[k] for k in f.files}
  except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
    raise DataError(f'cannot read npz file {path} ({type(e).__name__}: {e}); '
                    f'save it again with np.savez(FILE, images=...).') from None
  fix = (f'save {path} with np.savez(FILE, images=uint8 [N, H, W(, C)] '
         '...).')
  key = _first(_IMAGE_KEYS, arrays)
  if key is None:
    raise DataError(f'npz file {path} has no images array: its keys are '
                    f'{sorted(arrays) or "(none)"}, expected one of '
                    f'{list(_IMAGE_KEYS)}; {fix}')
  num_levels = 256
  if 'num_levels' in arrays:
    value = arrays['num_levels']
    if (value.shape != () or not np.issubdtype(value.dtype, np.integer) or
        not 2 <= int(value) <= 256):
      raise DataError(f'{path}[\'num_levels\'] must be an integer scalar in '
                      f'2..256, got {value!r}.')
    num_levels = int(value)
  label_key = _first(_LABEL_KEYS, arrays)
  test_key = _first(_TEST_IMAGE_KEYS, arrays)
  # Test labels only count next to test images.
  test_label_key = test_key and _first(_TEST_LABEL_KEYS, arrays)
  where = {
      'images': key,
      'labels': label_key or 'labels',
      'test_images': test_key or 'test_images',
      'test_labels': test_label_key or 'test_labels'
  }
  return checked_raw_data(
      name,
      arrays[key],
      arrays.get(label_key),
      num_levels=num_levels,
      test_images=arrays.get(test_key),
      test_labels=arrays.get(test_label_key),
      where={k: f'{path}[{v!r}]' for k, v in where.items()},
      fix=fix)
