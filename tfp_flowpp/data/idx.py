"""MNIST-style IDX files: ``idx:DIR`` and the Debian Fashion-MNIST copy.

The IDX format (http://yann.lecun.com/exdb/mnist/) is a big-endian header
``0, 0, dtype code, rank`` followed by ``rank`` uint32 dimensions and the
raw data. Image files have magic number 2051 (uint8, rank 3), label files
2049 (uint8, rank 1). Files may be gzip-compressed (``.gz``) or raw.

A directory holds ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``
and, for the official test split, ``t10k-images-idx3-ubyte`` and
``t10k-labels-idx1-ubyte`` (``.idx3-ubyte`` spellings are accepted too).
"""

import gzip
import os
import zlib

import numpy as np

from tfp_flowpp.data.errors import DataError
from tfp_flowpp.data.raw_data import RawData

__all__ = [
    'DEBIAN_FASHION_MNIST_DIR',
    'FASHION_MNIST_CLASS_NAMES',
    'find_idx_file',
    'load_idx_dir',
    'read_idx',
    'read_idx_header',
]

DEBIAN_FASHION_MNIST_DIR = '/usr/share/datasets/fashion-mnist'
FASHION_MNIST_CLASS_NAMES = [
    'T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt',
    'Sneaker', 'Bag', 'Ankle boot'
]

IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049

_DTYPES = {
    0x08: np.dtype('u1'),
    0x09: np.dtype('i1'),
    0x0B: np.dtype('>i2'),
    0x0C: np.dtype('>i4'),
    0x0D: np.dtype('>f4'),
    0x0E: np.dtype('>f8'),
}
_FIX = 're-download or re-extract it'


def _open(path):
  with open(path, 'rb') as f:
    gzipped = f.read(2) == b'\x1f\x8b'
  return gzip.open(path, 'rb') if gzipped else open(path, 'rb')


def _parse_header(head, path):
  """Returns ``(dtype, shape, header_bytes)`` from a file's first bytes."""
  if len(head) < 4:
    raise DataError(f'IDX file {path} is truncated ({len(head)} bytes); '
                    f'{_FIX}.')
  if head[0] != 0 or head[1] != 0 or head[2] not in _DTYPES:
    raise DataError(f'{path} is not an IDX file (magic bytes '
                    f'{head[:4].hex()}); expected e.g. 00000803 for images.')
  rank = head[3]
  size = 4 + 4 * rank
  if len(head) < size:
    raise DataError(f'IDX file {path} is truncated inside its header; '
                    f'{_FIX}.')
  shape = tuple(int(d) for d in np.frombuffer(head[4:size], '>u4'))
  return _DTYPES[head[2]], shape, size


def read_idx_header(path):
  """Reads only an IDX header: returns ``(magic, dtype, shape)``."""
  try:
    with _open(path) as f:
      head = f.read(4)
      if len(head) == 4:
        head += f.read(4 * head[3])
  except (OSError, EOFError, zlib.error) as e:
    raise DataError(f'cannot read IDX file {path}: {e}; {_FIX}.') from None
  dtype, shape, _ = _parse_header(head, path)
  return int.from_bytes(head[:4], 'big'), dtype, shape


def read_idx(path, expected_magic=None):
  """Reads a whole IDX file (gzip or raw) into a numpy array.

  Args:
    path: File path.
    expected_magic: If given, the magic number the file must have (2051 for
      image files, 2049 for label files).

  Returns:
    ``np.ndarray`` with the file's shape and native-endian dtype.

  Raises:
    DataError: the file is missing, not IDX, truncated or has extra bytes.
  """
  try:
    with _open(path) as f:
      data = f.read()
  except FileNotFoundError:
    raise DataError(f'IDX file {path} does not exist.') from None
  except (OSError, EOFError, zlib.error) as e:
    raise DataError(f'cannot read IDX file {path} (corrupt or truncated '
                    f'gzip: {e}); {_FIX}.') from None
  dtype, shape, offset = _parse_header(data, path)
  magic = int.from_bytes(data[:4], 'big')
  if expected_magic is not None and magic != expected_magic:
    raise DataError(f'IDX file {path} has magic number {magic}, expected '
                    f'{expected_magic}; check that it is the right file.')
  expected = int(np.prod(shape)) * dtype.itemsize
  found = len(data) - offset
  if found < expected:
    raise DataError(f'IDX file {path} is truncated: its header {shape} needs '
                    f'{expected} data bytes but it has {found}; {_FIX}.')
  if found > expected:
    raise DataError(f'IDX file {path} has {found - expected} bytes after its '
                    f'{shape} data; {_FIX}.')
  array = np.frombuffer(data, dtype, offset=offset).reshape(shape)
  return array.astype(dtype.newbyteorder('='), copy=False)


def find_idx_file(directory, prefix, kind):
  """Path of ``{prefix}-{kind}-ubyte[.gz]`` in ``directory``, or None.

  Args:
    directory: Directory to look in.
    prefix: ``'train'`` or ``'t10k'``.
    kind: ``'images-idx3'`` or ``'labels-idx1'``.
  """
  stem, rank = kind.split('-')
  for name in (f'{prefix}-{stem}-{rank}-ubyte',
               f'{prefix}-{stem}.{rank}-ubyte'):
    for suffix in ('', '.gz'):
      path = os.path.join(directory, name + suffix)
      if os.path.isfile(path):
        return path
  return None


def _read_pair(directory, prefix):
  images_path = find_idx_file(directory, prefix, 'images-idx3')
  labels_path = find_idx_file(directory, prefix, 'labels-idx1')
  if images_path is None and labels_path is None:
    return None, None
  if images_path is None or labels_path is None:
    have, lack = ((images_path, f'{prefix}-labels-idx1-ubyte[.gz]')
                  if labels_path is None else
                  (labels_path, f'{prefix}-images-idx3-ubyte[.gz]'))
    raise DataError(f'{directory} has {os.path.basename(have)} but no {lack}; '
                    f'add the missing file.')
  images = read_idx(images_path, IMAGES_MAGIC)
  labels = read_idx(labels_path, LABELS_MAGIC)
  if len(images) != len(labels):
    raise DataError(f'{images_path} has {len(images)} images but '
                    f'{labels_path} has {len(labels)} labels; {_FIX}.')
  return images[..., None], labels.astype(np.int64)


def load_idx_dir(directory, name=None, class_names=None):
  """Loads an MNIST-style directory of IDX files as `RawData`.

  Args:
    directory: Directory holding the ``train-*`` (and ``t10k-*``) files.
    name: Data set name (default ``'idx:<directory basename>'``).
    class_names: Optional label names.

  Returns:
    `RawData` with 256 levels; the ``t10k`` files, if present, are the
    official test split.

  Raises:
    DataError: missing directory or files, corrupt or mismatched files.
  """
  if not os.path.isdir(directory):
    raise DataError(f'IDX directory {directory} does not exist; pass a '
                    f'directory holding train-images-idx3-ubyte[.gz] etc.')
  name = name or 'idx:' + os.path.basename(os.path.normpath(directory))
  images, labels = _read_pair(directory, 'train')
  if images is None:
    raise DataError(f'{directory} has no train-images-idx3-ubyte[.gz] and '
                    f'train-labels-idx1-ubyte[.gz]; pass a directory with '
                    f'MNIST-style IDX files.')
  test_images, test_labels = _read_pair(directory, 't10k')
  if test_images is not None and test_images.shape[1:] != images.shape[1:]:
    raise DataError(f'{directory}: test images are '
                    f'{test_images.shape[1:3]} but train images are '
                    f'{images.shape[1:3]}; use files of one data set.')
  return RawData(name=name, images=images, labels=labels, num_levels=256,
                 class_names=class_names, test_images=test_images,
                 test_labels=test_labels)
