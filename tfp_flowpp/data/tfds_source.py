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
CIFAR-10, MNIST) is materialised to numpy and then behaves like every other
source. Bigger data (ImageNet 32/64, CelebA) streams: each epoch reads the
split in file order (TFDS stored it shuffled), rotates it by a random
offset and permutes windows of `SHUFFLE_BUFFER` examples, all keyed by
``(seed, epoch)`` with stateless RNGs, so the order does not depend on any
`tf.random` global seed. Resuming skips still-encoded examples to the exact
step (reading, not decoding, at most one epoch).
"""

import contextlib
import logging
import math
import socket
import threading
import time
import urllib.parse
import urllib.request

import numpy as np
import tensorflow as tf

from tfp_flowpp.data import pipeline
from tfp_flowpp.data import splits as splits_lib
from tfp_flowpp.data import transforms
from tfp_flowpp.data.config import DATASETS
from tfp_flowpp.data.errors import DataError
from tfp_flowpp.data.raw_data import RawData

__all__ = [
    'CONNECT_TIMEOUT_SECONDS',
    'IN_MEMORY_LIMIT_BYTES',
    'SHUFFLE_BUFFER',
    'TfdsSource',
    'is_prepared',
    'prepared_builder',
]

_LOG = logging.getLogger(__name__)

# Data sets whose (cropped) images take more bytes than this stream.
IN_MEMORY_LIMIT_BYTES = 2 * 1024**3
# Examples per streaming shuffle window (held encoded, so small).
SHUFFLE_BUFFER = 10_000
# Seconds to wait for each download host before declaring the machine
# offline.
CONNECT_TIMEOUT_SECONDS = 3.0
# Probed when TFDS does not list a data set's download URLs.
_DEFAULT_HOST = ('storage.googleapis.com', 443)
_SHUFFLE_TAG = 0x5EED
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
  """``{(host, port)}`` TFDS would download from (via a proxy, if set)."""
  urls = list(getattr(type(builder), 'url_infos', None) or {})
  addresses = set()
  proxies = urllib.request.getproxies()
  for url in urls:
    parts = urllib.parse.urlsplit(url)
    if not parts.hostname:
      continue
    proxy = proxies.get(parts.scheme) or proxies.get('all')
    if proxy and not urllib.request.proxy_bypass(parts.hostname):
      proxy_parts = urllib.parse.urlsplit(proxy)
      if proxy_parts.hostname:
        addresses.add((proxy_parts.hostname, proxy_parts.port or 3128))
        continue
    addresses.add((parts.hostname, parts.port or
                   (80 if parts.scheme == 'http' else 443)))
  return addresses or {_DEFAULT_HOST}


def _unreachable(addresses, timeout):
  """Returns ``{address: reason}`` for addresses that refuse a TCP connect.

  All addresses are probed in parallel daemon threads, so even a hanging DNS
  lookup cannot make this take much longer than ``timeout``.
  """
  results = {}

  def probe(address):
    try:
      with socket.create_connection(address, timeout=timeout):
        results[address] = None
    except OSError as e:
      results[address] = str(e) or type(e).__name__

  threads = [threading.Thread(target=probe, args=(a,), daemon=True)
             for a in sorted(addresses)]
  for t in threads:
    t.start()
  deadline = time.monotonic() + timeout + 0.5
  for t in threads:
    t.join(max(0., deadline - time.monotonic()))
  return {a: results.get(a, 'timed out') for a in sorted(addresses)
          if results.get(a, 'timed out') is not None}


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
  unreachable = _unreachable(_download_addresses(builder),
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

  # -- memory or streaming -----------------------------------------------------

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

  def to_streaming_dataset(self):
    """An `ImageDataset` whose splits stream from TFDS."""
    config = self.config
    if config.classes:
      train_labels = self.read_labels(self.train_split)
      transforms.check_classes_present(config.classes,
                                       np.unique(train_labels), self.name,
                                       self.class_names)
      n = len(train_labels)
    else:
      n = self.split_sizes[self.train_split]
    indices = splits_lib.split_indices(
        n, has_official_test=self.test_split is not None, config=config,
        name=self.name)
    backends = {}
    for split in ('train', 'validation'):
      backends[split] = _StreamSplit(self, self.train_split, n,
                                     indices[split])
    if self.test_split is not None:
      backends['test'] = _StreamSplit(self, self.test_split, None, None)
    else:
      backends['test'] = _StreamSplit(self, self.train_split, n,
                                      indices['test'])
    _LOG.info('Streaming TFDS dataset %s (%s).', self.name, {
        s: b.num_examples for s, b in backends.items()})
    return pipeline.ImageDataset(
        name=self.name, image_shape=self.image_shape,
        num_levels=self.num_levels, splits=backends,
        class_names=self.class_names, seed=config.seed,
        horizontal_flip=config.horizontal_flip, config=config)


class _StreamSplit:
  """One split streamed from TFDS: a subset (by index) of an official split.

  Args:
    source: The `TfdsSource`.
    tfds_split: Official split to read.
    total: Number of (class-filtered) examples in ``tfds_split``, or None to
      count them.
    indices: Sorted positions to keep, or None for all.
  """

  streaming = True

  def __init__(self, source, tfds_split, total, indices):
    self._source = source
    self._tfds_split = tfds_split
    self._indices = indices
    if indices is not None:
      self.num_examples = len(indices)
      self._mask = np.zeros([total], bool)
      self._mask[indices] = True
    else:
      self._mask = None
      if source.config.classes:
        self.num_examples = len(source.read_labels(tfds_split))
      else:
        self.num_examples = source.split_sizes[tfds_split]

  def _encoded(self):
    ds = self._source.encoded(self._tfds_split)
    if self._mask is not None:
      mask = tf.constant(self._mask)
      ds = ds.enumerate().filter(lambda i, ex: tf.gather(mask, i)).map(
          lambda i, ex: ex)
    return ds

  def _finish(self, ds):
    """Decodes, crops and reduces bits of ``(encoded, label)`` elements."""
    source = self._source
    num_bits = source.config.num_bits
    shape = source.image_shape
    return ds.map(
        lambda enc, lab: transforms.reduce_bits(
            tf.ensure_shape(source.decode(enc, lab)[0], shape), num_bits),
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

  def images(self):
    raise AssertionError('streaming splits have no arrays')

  def labels(self):
    raise AssertionError('streaming splits have no arrays')

  def train_stream(self, batch_size, steps_per_epoch, start_step, seed):
    """Infinite ``(global_step, batch)``; epoch e shuffled by (seed, e).

    Resuming at ``start_step`` skips the epoch's first batches as encoded
    records (read, not decoded).
    """
    first_epoch, first_batch = divmod(start_step, steps_per_epoch)
    base = self._encoded()
    window = min(SHUFFLE_BUFFER, max(1, self.num_examples))
    finish = self._finish

    def epoch(e):
      skip_batches = tf.where(e == first_epoch, tf.constant(first_batch,
                                                            tf.int64), 0)
      ds = _stateless_window_shuffle(base, window, seed, e)
      ds = ds.skip(skip_batches * batch_size)
      ds = finish(ds).batch(batch_size, drop_remainder=True)
      return ds.take(steps_per_epoch - skip_batches)

    batches = tf.data.Dataset.range(first_epoch, 2**62).flat_map(epoch)
    steps = tf.data.Dataset.range(start_step, 2**62)
    return tf.data.Dataset.zip((steps, batches))

  def eval_stream(self, batch_size):
    return self._finish(self._encoded()).batch(batch_size)


def _stateless_window_shuffle(ds, window, seed, epoch):
  """Shuffles ``ds`` with a buffer of ``window``, keyed only by (seed, epoch).

  The stream is rotated by a random offset in ``[0, window)`` (so window
  boundaries move every epoch), cut into windows of ``window`` consecutive
  elements, and each window is permuted. Unlike `tf.data.Dataset.shuffle`,
  the order does not depend on the `tf.random` global seed, so a resumed
  process reproduces it whatever seeds the trainer sets.

  Args:
    ds: Dataset of ``(encoded image, label)``, in a fixed order.
    window: Shuffle window (buffer) size.
    seed: Python int config seed.
    epoch: int64 scalar Tensor.

  Returns:
    The shuffled dataset.
  """
  key = tf.random.experimental.stateless_fold_in(
      tf.constant([seed, _SHUFFLE_TAG], tf.int64), tf.cast(epoch, tf.int64))
  offset = tf.random.stateless_uniform([], seed=key, minval=0,
                                       maxval=window, dtype=tf.int64)
  ds = ds.skip(offset).concatenate(ds.take(offset))

  def permute(index, chunk):
    chunk_key = tf.random.experimental.stateless_fold_in(key, index)
    n = tf.shape(chunk[0])[0]
    order = tf.argsort(tf.random.stateless_uniform([n], seed=chunk_key))
    return tuple(tf.gather(part, order) for part in chunk)

  return ds.batch(window).enumerate().map(permute).unbatch()
