"""`RawData`: what an in-memory source hands over before splitting."""

import dataclasses

import numpy as np

from tfp_flowpp.data.errors import DataError

__all__ = ['RawData', 'as_image_batch', 'as_labels']


@dataclasses.dataclass
class RawData:
  """Images of one source as loaded, before filtering and splitting.

  Attributes:
    name: Short data set name, e.g. ``'digits'``.
    images: uint8 ``[N, H, W, C]``: the official train split, or every image
      when the source has no official test split.
    labels: int64 ``[N]`` or None when the source has no labels.
    num_levels: Pixel values are integers in ``[0, num_levels)``.
    class_names: Names indexed by label, or None.
    test_images: uint8 ``[M, H, W, C]`` official test split, or None.
    test_labels: int64 ``[M]`` or None.
    paths: Source file of each image of ``images`` (same order), for sources
      read from files (``folder:DIR``); None otherwise.
  """

  name: str
  images: np.ndarray
  labels: np.ndarray | None
  num_levels: int
  class_names: list[str] | None = None
  test_images: np.ndarray | None = None
  test_labels: np.ndarray | None = None
  paths: list[str] | None = None

  @property
  def has_official_test(self):
    return self.test_images is not None


def as_image_batch(array, what, fix):
  """Checks a uint8 image array and returns it as ``[N, H, W, C]``.

  Args:
    array: Array-like, ``[N, H, W]`` or ``[N, H, W, C]`` uint8.
    what: Where the array came from, for the error message.
    fix: How to fix a wrong array, for the error message.

  Returns:
    A uint8 ``np.ndarray`` of rank 4.

  Raises:
    DataError: wrong dtype or rank, or no images.
  """
  array = np.asarray(array)
  if array.dtype != np.uint8:
    raise DataError(f'{what} has dtype {array.dtype}, expected uint8; {fix}')
  if array.ndim == 3:
    array = array[..., None]
  if array.ndim != 4:
    raise DataError(f'{what} has shape {array.shape}, expected [N, H, W] or '
                    f'[N, H, W, C]; {fix}')
  if min(array.shape) == 0:
    raise DataError(f'{what} is empty (shape {array.shape}); {fix}')
  return array


def as_labels(array, num_images, what, fix):
  """Checks an integer label vector with one label per image."""
  array = np.asarray(array)
  if array.ndim == 2 and array.shape[1] == 1:
    array = array[:, 0]
  if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer):
    raise DataError(f'{what} has shape {array.shape} and dtype {array.dtype}, '
                    f'expected a vector of integer labels; {fix}')
  if len(array) != num_images:
    raise DataError(f'{what} has {len(array)} labels for {num_images} '
                    f'images; {fix}')
  if len(array) and array.min() < 0:
    raise DataError(f'{what} has a negative label {array.min()}; {fix}')
  return array.astype(np.int64)
