"""``folder:DIR``: a directory of PNG/JPEG images, optionally labelled.

Images are found recursively (``.png``, ``.jpg``, ``.jpeg``, any case) and
read in sorted path order with Pillow. When every image sits inside a
first-level subfolder, the subfolder names (sorted) are the class names and
their positions the labels; otherwise the data is unlabelled.

Channels: grayscale gives C=1, colour C=3 (alpha is dropped, palettes are
expanded); a folder mixing grayscale and colour is converted to RGB. All
images must share one size unless an ``image_size`` is given, in which case
each is center-cropped and resized on its own.
"""

import logging
import os

import numpy as np

from tfp_flowpp.data import transforms
from tfp_flowpp.data.errors import DataError
from tfp_flowpp.data.raw_data import RawData

__all__ = ['IMAGE_EXTENSIONS', 'load_image_folder']

_LOG = logging.getLogger(__name__)

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg')

_GRAY_MODES = ('1', 'L', 'LA')


def _list_images(directory):
  """Sorted image paths under ``directory`` and a count of other files."""
  paths, others = [], []
  for root, dirs, files in os.walk(directory):
    dirs[:] = sorted(d for d in dirs if not d.startswith('.'))
    for f in files:
      if f.startswith('.'):
        continue
      full = os.path.join(root, f)
      if f.lower().endswith(IMAGE_EXTENSIONS):
        paths.append(full)
      else:
        others.append(full)
  return sorted(paths), sorted(others)


def _decode(path):
  """Returns ``(array [H, W] or [H, W, 3] uint8, is_gray)`` for one file."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  try:
    with Image.open(path) as img:
      img.load()
      mode = img.mode
      if mode in ('I;16', 'I;16B', 'I;16L', 'I', 'F'):
        raise DataError(f'{path} is a {mode} (16-bit or float) image; only '
                        f'8-bit images are supported, convert it to 8-bit.')
      if mode in _GRAY_MODES:
        return np.asarray(img.convert('L')), True
      return np.asarray(img.convert('RGB')), False
  except DataError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    raise DataError(f'{path} is not a decodable image ({type(e).__name__}: '
                    f'{e}); delete or replace it.') from None


def _crop_resize_all(arrays, size):
  """Center-crops and resizes each image, batching images of one shape."""
  by_shape = {}
  for i, a in enumerate(arrays):
    by_shape.setdefault(a.shape, []).append(i)
  out = list(arrays)
  for shape, members in by_shape.items():
    if shape[:2] == (size, size):
      continue
    resized = transforms.center_crop_resize_np(
        np.stack([arrays[i] for i in members]), size, 256)
    for i, r in zip(members, resized):
      out[i] = r
  return out


def load_image_folder(directory, image_size=None, name=None):
  """Loads every image under ``directory`` as `RawData` (256 levels).

  Args:
    directory: Root folder.
    image_size: None to require one shared size, or an int S to
      center-crop and resize each image to S x S.
    name: Data set name (default ``'folder:<basename>'``).

  Returns:
    `RawData` with no official test split; its ``paths`` are the files.

  Raises:
    DataError: missing or empty folder, an undecodable file, or mixed sizes
      without ``image_size``.
  """
  if not os.path.isdir(directory):
    raise DataError(f'image folder {directory} does not exist; pass an '
                    f'existing directory of PNG/JPEG images.')
  name = name or 'folder:' + os.path.basename(os.path.normpath(directory))
  paths, others = _list_images(directory)
  if not paths:
    hint = (f' (it has {len(others)} other files, e.g. {others[0]})'
            if others else '')
    raise DataError(f'image folder {directory} has no .png/.jpg/.jpeg '
                    f'images{hint}; add images or point to another folder.')
  if others:
    _LOG.warning('%s: ignoring %d non-image files, e.g. %s', directory,
                 len(others), others[0])

  rel = [os.path.relpath(p, directory) for p in paths]
  labelled = all(os.sep in r for r in rel)
  class_names = labels = None
  if labelled:
    class_names = sorted({r.split(os.sep)[0] for r in rel})
    index = {c: i for i, c in enumerate(class_names)}
    labels = np.array([index[r.split(os.sep)[0]] for r in rel], np.int64)

  arrays, gray = [], []
  for p in paths:
    a, g = _decode(p)
    arrays.append(a)
    gray.append(g)
  all_gray = all(gray)
  if not all_gray and any(gray):
    _LOG.info('%s mixes grayscale and colour images; converting all to '
              'RGB.', directory)
  arrays = [a[..., None] if all_gray else
            (np.repeat(a[..., None], 3, axis=-1) if a.ndim == 2 else a)
            for a in arrays]

  if image_size is not None:
    arrays = _crop_resize_all(arrays, image_size)
  else:
    first = arrays[0].shape[:2]
    for a, p in zip(arrays, paths):
      if a.shape[:2] != first:
        raise DataError(
            f'images in {directory} have different sizes: {paths[0]} is '
            f'{first[1]}x{first[0]} but {p} is {a.shape[1]}x{a.shape[0]} '
            f'(WxH); resize them to one size or set image_size.')
  _LOG.info('Loaded %d images from %s.', len(arrays), directory)
  return RawData(name=name, images=np.stack(arrays), labels=labels,
                 num_levels=256, class_names=class_names, paths=paths)
