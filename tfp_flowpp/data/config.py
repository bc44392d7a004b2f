"""`DataConfig`: everything that decides which images a model sees.

Each field carries a ``metadata={'help': ...}`` text so that a command-line
tool can generate one flag per field (``dataclasses.fields(DataConfig)``).
The config is frozen and validated on construction: a bad value raises
`DataError` at once rather than deep inside a training run.

`DATASETS` lists the forms of the ``dataset`` string; it is that field's help
and what errors about an unknown dataset quote.
"""

import dataclasses
import numbers

from tfp_flowpp.data import idx
from tfp_flowpp.data.errors import DataError

__all__ = ['DATASETS', 'DataConfig']

DATASETS = (
    "'digits' (default: scikit-learn's 1,797 8x8 digits, 17 levels, no "
    "download); 'idx:DIR' (MNIST-style IDX files, gz or raw); 'folder:DIR' "
    "(PNG/JPEG images, class subfolders optional); 'npz:FILE' (uint8 "
    "'images' [N,H,W(,C)], optional 'labels', 'test_images'); "
    "'fashion_mnist' or 'mnist' (TFDS if prepared, else Debian's "
    f"{idx.DEBIAN_FASHION_MNIST_DIR} for fashion_mnist); or any TFDS image "
    "dataset name, e.g. cifar10, imagenet_resized/32x32, "
    "imagenet_resized/64x64, celeb_a, downsampled_imagenet/64x64.")


def _help(default, text):
  return dataclasses.field(default=default, metadata={'help': text})


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """Which data set to load and how to split, reduce and batch it."""

  dataset: str = _help('digits', f'Data source: {DATASETS}')
  data_dir: str | None = _help(
      None, 'TFDS data directory holding prepared data sets (default: the '
      'TFDS default, ~/tensorflow_datasets).')
  classes: tuple[int, ...] = _help(
      (), 'Integer labels to keep, e.g. 0,1; empty keeps all classes.')
  num_bits: int | None = _help(
      None, 'Reduce 8-bit data to 2**num_bits levels (x >> (8 - num_bits)); '
      'unset keeps the native depth.')
  image_size: int | None = _help(
      None, 'Center-crop to a square and resize to image_size x image_size '
      '(e.g. 64 for CelebA 64); unset keeps the native size.')
  validation_size: float | int = _help(
      0.1, 'Validation images held out from train: a fraction in (0, 1) or '
      'a count; 0 disables validation.')
  test_size: float | int = _help(
      0.2, 'Test images held out when the source has no official test '
      'split: a fraction in (0, 1) or a count.')
  horizontal_flip: bool = _help(
      False, 'Randomly flip training images left-right (probability 0.5).')
  perturbation_rate: float = _help(
      0.0, 'Replace each pixel of each training image with a uniform random '
      'level with this probability (Ren et al. 2019 background models); 0 '
      'disables.')
  seed: int = _help(0, 'Seed for the split and the per-epoch shuffles.')

  def __post_init__(self):
    if not isinstance(self.dataset, str) or not self.dataset.strip():
      raise DataError(f'dataset must be a non-empty string, got '
                      f'{self.dataset!r}; e.g. --dataset=digits.')
    if self.data_dir is not None and not isinstance(self.data_dir, str):
      raise DataError(f'data_dir must be a path string or None, got '
                      f'{self.data_dir!r}.')
    object.__setattr__(self, 'classes', _as_classes(self.classes))
    if self.num_bits is not None:
      if not _is_int(self.num_bits) or not 1 <= self.num_bits <= 8:
        raise DataError(f'num_bits must be an integer in 1..8 or unset, got '
                        f'{self.num_bits!r}.')
      object.__setattr__(self, 'num_bits', int(self.num_bits))
    if self.image_size is not None:
      if not _is_int(self.image_size) or self.image_size < 1:
        raise DataError(f'image_size must be a positive integer or unset, '
                        f'got {self.image_size!r}.')
      object.__setattr__(self, 'image_size', int(self.image_size))
    object.__setattr__(self, 'validation_size',
                       _as_size('validation_size', self.validation_size))
    object.__setattr__(self, 'test_size', _as_size('test_size',
                                                   self.test_size))
    if not isinstance(self.horizontal_flip, bool):
      raise DataError(f'horizontal_flip must be True or False, got '
                      f'{self.horizontal_flip!r}.')
    if (isinstance(self.perturbation_rate, bool) or
        not isinstance(self.perturbation_rate, numbers.Real) or
        not 0. <= self.perturbation_rate <= 1.):
      raise DataError(f'perturbation_rate must be a probability in [0, 1], '
                      f'got {self.perturbation_rate!r}.')
    object.__setattr__(self, 'perturbation_rate',
                       float(self.perturbation_rate))
    if not _is_int(self.seed) or self.seed < 0:
      raise DataError(f'seed must be a non-negative integer, got '
                      f'{self.seed!r}.')
    object.__setattr__(self, 'seed', int(self.seed))


def _is_int(value):
  return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _as_classes(classes):
  if classes is None:
    return ()
  if _is_int(classes):
    classes = (classes,)
  if isinstance(classes, (str, bytes)):
    raise DataError(f'classes must be a tuple of integer labels, got '
                    f'{classes!r}; e.g. classes=(0, 1).')
  try:
    classes = tuple(classes)
  except TypeError:
    raise DataError(f'classes must be a tuple of integer labels, got '
                    f'{classes!r}; e.g. classes=(0, 1).') from None
  for c in classes:
    if not _is_int(c) or c < 0:
      raise DataError(f'classes must hold non-negative integer labels, got '
                      f'{c!r} in {classes!r}.')
  if len(set(classes)) != len(classes):
    raise DataError(f'classes lists a label twice: {classes!r}.')
  return tuple(int(c) for c in classes)


def _as_size(name, value):
  """Validates a split size: an int count, or a float fraction in (0, 1).

  A whole float >= 1 (as a float flag would give, e.g. 5000.0) is taken as a
  count.
  """
  if isinstance(value, numbers.Real) and not isinstance(value, bool):
    if _is_int(value) or (value >= 1 and float(value).is_integer()):
      if value >= 0:
        return int(value)
    elif value == 0:
      return 0
    elif 0 < value < 1:
      return float(value)
  raise DataError(f'{name} must be a fraction in (0, 1) or an integer count '
                  f'>= 0, got {value!r}.')
