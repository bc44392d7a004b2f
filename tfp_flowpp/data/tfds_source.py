"""TFDS image data sets: ``cifar10``, ``mnist``, ``imagenet_resized/32x32``...

Loading goes through ``tfds.builder(name, data_dir=...)``. When the data is
not prepared in ``data_dir`` it is downloaded only if the download hosts
answer within a few seconds; otherwise `DataError` says at once how to
provide the data (``tfds build`` on a connected machine, then copy the
directory), instead of TFDS retrying for minutes.

The image feature (``'image'``), the labels (``'label'``, if a `ClassLabel`)
and the official splits are used: ``train``, and ``test`` (or, for the
ImageNet variants that have none, ``validation``) as the test split; our
``validation`` split is always held out from ``train``.

Data that fits in memory (< `IN_MEMORY_LIMIT_BYTES` after cropping, e.g.
CIFAR-10, MNIST) is materialised to numpy (`TfdsSource.to_raw`) and then
behaves like every other source. Bigger data (ImageNet 32/64, CelebA)
streams (`streaming.streaming_dataset`).
"""

import contextlib
import logging
import math

import numpy as np
import tensorflow as tf

from tfp_flowpp.data import reachability
from tfp_flowpp.data import transforms
from tfp_flowpp.data.config import DATASETS
from tfp_flowpp.data.errors import DataError
from tfp_flowpp.data.raw_data import RawData

__all__ = [
    'CONNECT_TIMEOUT_SECONDS',
    'IN_MEMORY_LIMIT_BYTES',
    'TfdsSource',
    'is_prepared',
    'prepared_builder',
]

_LOG = logging.getLogger(__name__)

# Data sets whose (cropped) images take more bytes than this stream.
IN_MEMORY_LIMIT_BYTES = 2 * 1024**3
# Seconds to wait for each download host before declaring the machine
# offline.
CONNECT_TIMEOUT_SECONDS = 3.0
# Probed when TFDS does not list a data set's download URLs.
_DEFAULT_HOST = ('storage.googleapis.com', 443)
_MATERIALISE_BATCH = 1024


def _tfds():
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise DataError('TFDS data sets need the tensorflow-datasets package; '
                    'pip install tensorflow-datasets.') from None
  return tfds


@contextlib.contextmanager
def _quiet_absl_warnings():
  """Hides TFDS's 'has no dataset_info.json' warning for unprepared data."""
  absl_logger = logging.getLogger('absl')
  level = absl_logger.level
  absl_logger.setLevel(logging.ERROR)
  try:
    yield
  finally:
    absl_logger.setLevel(level)


def make_builder(name, data_dir):
  """``tfds.builder(name, data_dir)``, with unknown names as `DataError`."""
  tfds = _tfds()
  try:
    with _quiet_absl_warnings():
      return tfds.builder(name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError:
    raise DataError(f'unknown dataset {name!r}; valid forms: '
                    f'{DATASETS}') from None
  except Exception as e:  # pylint: disable=broad-except
    first = (str(e).splitlines() or [type(e).__name__])[0]
    raise DataError(f'cannot open TFDS dataset {name!r}: {first}; check the '
                    f'name, config and version.') from None


def is_prepared(name, data_dir):
  """Whether TFDS data set ``name`` is already prepared in ``data_dir``."""
  try:
    builder = make_builder(name, data_dir)
  except DataError:
    return False
  with _quiet_absl_warnings():
    return builder.is_prepared()


def _download_addresses(builder):
  """``{(host, port)}`` TFDS would download ``builder``'s data from."""
  urls = list(getattr(type(builder), 'url_infos', None) or {})
  return reachability.download_addresses(urls) or {_DEFAULT_HOST}


def _idx_hint(name):
  if name.split(':')[0] in ('mnist', 'fashion_mnist'):
    return f' (or pass --dataset=idx:DIR, DIR holding the {name} IDX files)'
  return ''


def prepared_builder(name, data_dir):
  """A TFDS builder whose data is prepared, downloading only if online.

  Raises:
    DataError: unknown name, manual-download data set, or data not prepared
      and its download hosts unreachable (raised within a few seconds).
  """
  builder = make_builder(name, data_dir)
  with _quiet_absl_warnings():
    if builder.is_prepared():
      return builder
  flag = f' --data_dir {data_dir}' if data_dir else ''
  if builder.MANUAL_DOWNLOAD_INSTRUCTIONS:
    raise DataError(
        f'TFDS dataset {name!r} is not prepared in {builder.data_path} and '
        f'needs a manual download; follow the TFDS instructions for it, run '
        f'`tfds build {name} --manual_dir DIR{flag}`, or pass --data_dir.')
  unreachable = reachability.unreachable(_download_addresses(builder),
                                        CONNECT_TIMEOUT_SECONDS)
  if unreachable:
    (host, port), reason = next(iter(unreachable.items()))
    raise DataError(
        f'TFDS dataset {name!r} is not prepared in {builder.data_path} and '
        f'this machine cannot reach {host}:{port} to download it ({reason}); '
        f'run `tfds build {name} --data_dir DIR` on a connected machine and '
        f'copy DIR here, then pass --data_dir DIR{_idx_hint(name)}.')
  _LOG.info('Downloading and preparing TFDS dataset %s into %s.', name,
            builder.data_path)
  try:
    builder.download_and_prepare()
  except Exception as e:  # pylint: disable=broad-except
    first = (str(e).splitlines() or [type(e).__name__])[0]
    raise DataError(f'downloading TFDS dataset {name!r} failed: {first}; '
                    f'retry, or run `tfds build {name} --data_dir DIR` '
                    f'elsewhere and copy DIR here.') from None
  return builder


class TfdsSource:
  """A prepared TFDS image data set, before splitting.

  Attributes:
    name: The TFDS name as given.
    builder: The prepared builder.
    class_names: ClassLabel names, or None when there are no labels.
    train_split: ``'train'``.
    test_split: ``'test'``, ``'validation'`` (ImageNet), or None.
    split_sizes: Examples in each TFDS split.
    image_shape: ``(H, W, C)`` after the optional crop/resize.
    num_levels: Levels after the optional bit reduction.
  """

  def __init__(self, name, config):
    self.name = name
    self.config = config
    self.builder = prepared_builder(name, config.data_dir)
    info = self.builder.info
    features = info.features
    if 'image' not in features:
      raise DataError(f'TFDS dataset {name!r} has no \'image\' feature '
                      f'(features: {sorted(features.keys())}); choose an '
                      f'image data set.')
    self._image_feature = features['image']
    dtype = tf.as_dtype(getattr(self._image_feature, 'tf_dtype', None) or
                        self._image_feature.dtype)
    if dtype != tf.uint8:
      raise DataError(f'TFDS dataset {name!r} has {dtype.name} images; only '
                      f'uint8 images are supported.')
    label = features['label'] if 'label' in features else None
    tfds = _tfds()
    self._has_labels = isinstance(label, tfds.features.ClassLabel)
    self.class_names = list(label.names) if self._has_labels else None
    if config.classes and not self._has_labels:
      raise DataError(f'classes={list(config.classes)} was given but TFDS '
                      f'dataset {name!r} has no class labels; leave classes '
                      f'empty.')
    available = set(info.splits.keys())
    if 'train' not in available:
      raise DataError(f'TFDS dataset {name!r} has no train split (splits: '
                      f'{sorted(available)}).')
    self.train_split = 'train'
    self.test_split = next(
        (s for s in ('test', 'validation') if s in available), None)
    self.split_sizes = {s: info.splits[s].num_examples for s in available}

    size = config.image_size
    shape = tuple(self._image_feature.shape)
    if size is not None:
      shape = (size, size, shape[-1])
    elif None in shape:
      shape = tuple(next(iter(self.decoded(self.train_split).take(1)))[0]
                    .shape)
      _LOG.info('%s: image shape %s taken from the first image.', name,
                shape)
    self.image_shape = tuple(int(d) for d in shape)
    self.num_levels = transforms.check_num_bits(config.num_bits, 256, name)

  # -- reading ---------------------------------------------------------------

  def encoded(self, split):
    """``(encoded image, label)`` of a split, in file order, class-filtered."""
    tfds = _tfds()
    ds = self.builder.as_dataset(
        split=split, shuffle_files=False,
        decoders={'image': tfds.decode.SkipDecoding()},
        read_config=tfds.ReadConfig(try_autocache=False))
    has_labels = self._has_labels
    ds = ds.map(lambda ex: (ex['image'], ex['label'] if has_labels else
                            tf.constant(-1, tf.int64)))
    classes = self.config.classes
    if classes:
      wanted = tf.constant(classes, tf.int64)
      ds = ds.filter(lambda img, lab: tf.reduce_any(
          tf.equal(tf.cast(lab, tf.int64), wanted)))
    return ds

  def decode(self, encoded, label):
    """Decodes one image and applies crop/resize; bits are reduced later."""
    image = self._image_feature.decode_example(encoded)
    if self.config.image_size is not None:
      image = transforms.center_crop_resize(image, self.config.image_size,
                                            256)
    return image, label

  def decoded(self, split):
    """``(image, label)`` of a split, decoded and cropped, in file order."""
    return self.encoded(split).map(self.decode,
                                   num_parallel_calls=tf.data.AUTOTUNE,
                                   deterministic=True)

  def read_labels(self, split):
    """All labels of a split (reads the records, skips image decoding)."""
    ds = self.encoded(split).map(lambda img, lab: lab).batch(65536)
    return np.concatenate([b.numpy() for b in ds] or
                          [np.zeros([0], np.int64)])

  # -- in memory ---------------------------------------------------------------

  def estimated_bytes(self):
    """Bytes the (class-filtered, cropped) images would take in memory."""
    n = self.split_sizes[self.train_split]
    if self.test_split:
      n += self.split_sizes[self.test_split]
    if self.config.classes and self._has_labels:
      n *= len(self.config.classes) / max(1, len(self.class_names))
    return int(n * math.prod(self.image_shape))

  def fits_in_memory(self):
    return self.estimated_bytes() <= IN_MEMORY_LIMIT_BYTES

  def _materialise(self, split):
    images, labels = [], []
    ds = self.decoded(split).map(
        lambda img, lab: (tf.ensure_shape(img, self.image_shape), lab))
    for x, y in ds.batch(_MATERIALISE_BATCH).prefetch(2):
      images.append(x.numpy())
      labels.append(y.numpy())
    if not images:
      return np.zeros((0,) + self.image_shape, np.uint8), np.zeros([0],
                                                                  np.int64)
    return np.concatenate(images), np.concatenate(labels).astype(np.int64)

  def to_raw(self):
    """Reads everything into `RawData` (classes filtered, images cropped).

    Bit reduction is left to the caller, like for every in-memory source.
    """
    _LOG.info('Reading TFDS dataset %s into memory.', self.name)
    images, labels = self._materialise(self.train_split)
    test_images = test_labels = None
    if self.test_split:
      test_images, test_labels = self._materialise(self.test_split)
    if not self._has_labels:
      labels = test_labels = None
    return RawData(name=self.name, images=images, labels=labels,
                   num_levels=256, class_names=self.class_names,
                   test_images=test_images,
                   test_labels=None if test_images is None else test_labels)
