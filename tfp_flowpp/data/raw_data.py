"""`RawData`: what an in-memory source hands over before splitting.

`checked_raw_data` validates user arrays (those of an ``npz:FILE`` or those
given to `data.from_arrays`) into `RawData`, with one-line `DataError`s.
"""

import dataclasses
import numbers

import numpy as np

from tfp_flowpp.data.errors import DataError

__all__ = ['RawData', 'as_image_batch', 'as_labels', 'checked_raw_data']


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


def checked_raw_data(name,
                     images,
                     labels=None,
                     *,
                     num_levels=256,
                     class_names=None,
                     test_images=None,
                     test_labels=None,
                     where=None,
                     fix=''):
  """Validates image and label arrays and returns them as `RawData`.

  Args:
    name: Data set name.
    images: uint8 ``[N, H, W]`` or ``[N, H, W, C]``, values in
      ``[0, num_levels)``.
    labels: Integer ``[N]`` (or ``[N, 1]``) labels, or None.
    num_levels: Integer in 2..256, the number of pixel levels.
    class_names: Names indexed by label (needs labels), or None.
    test_images: Official test images of the same ``H, W, C``, or None.
    test_labels: Their labels; given exactly when ``labels`` is.
    where: How messages name each array: a dict with any of the keys
      ``'images'``, ``'labels'``, ``'test_images'``, ``'test_labels'``
      (default: those names).
    fix: How to fix a bad array, ending the messages.

  Returns:
    `RawData` with rank-4 images and int64 labels.

  Raises:
    DataError: wrong dtype, rank or value range, mismatched shapes or label
      counts, labels for only one split, too few class names.
  """
  where = dict(
      {k: k for k in ('images', 'labels', 'test_images', 'test_labels')},
      **(where or {}))
  if (not isinstance(num_levels, numbers.Integral) or
      isinstance(num_levels, bool) or not 2 <= num_levels <= 256):
    raise DataError(f'num_levels must be an integer in 2..256, got '
                    f'{num_levels!r}.')
  images = as_image_batch(images, where['images'], fix)
  if labels is not None:
    labels = as_labels(labels, len(images), where['labels'], fix)
  if test_images is None:
    if test_labels is not None:
      raise DataError(f'{where["test_labels"]} is given without '
                      f'{where["test_images"]}; {fix}')
  else:
    test_images = as_image_batch(test_images, where['test_images'], fix)
    if test_images.shape[1:] != images.shape[1:]:
      raise DataError(f'{where["test_images"]} are {test_images.shape[1:]} '
                      f'images but {where["images"]} are '
                      f'{images.shape[1:]}; use one image shape.')
    if (labels is None) != (test_labels is None):
      raise DataError(f'labels are given for only one of {where["images"]} '
                      f'and {where["test_images"]}; give both or neither.')
    if test_labels is not None:
      test_labels = as_labels(test_labels, len(test_images),
                              where['test_labels'], fix)
  if num_levels < 256:
    for key, array in (('images', images), ('test_images', test_images)):
      if array is not None and array.max() >= num_levels:
        raise DataError(f'{where[key]} have value {array.max()} but '
                        f'num_levels is {num_levels}; fix the data or '
                        f'num_levels.')
  if class_names is not None:
    class_names = [str(c) for c in class_names]
    if labels is None:
      raise DataError('class_names are given without labels; pass labels '
                      'too, or no class_names.')
    top = max(int(a.max()) for a in (labels, test_labels)
              if a is not None and len(a))
    if top >= len(class_names):
      raise DataError(f'{len(class_names)} class_names do not cover label '
                      f'{top}; give one name per label.')
  return RawData(name=name, images=images, labels=labels,
                 num_levels=int(num_levels), class_names=class_names,
                 test_images=test_images, test_labels=test_labels)
