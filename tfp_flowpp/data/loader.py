"""The two ways to an `ImageDataset`: `load_dataset` and `from_arrays`.

`load_dataset(config)` reads the source the ``dataset`` string names (see
`DATASETS`); `from_arrays` takes numpy arrays already in memory. In-memory
data all goes through the same steps, in this order: keep ``classes``,
center-crop and resize to ``image_size``, reduce to ``num_bits``, then split
deterministically (`splits.split_indices`).
"""

import logging
import os

import numpy as np

from tfp_flowpp.data import digits
from tfp_flowpp.data import idx
from tfp_flowpp.data import image_folder
from tfp_flowpp.data import npz
from tfp_flowpp.data import pipeline
from tfp_flowpp.data import splits as splits_lib
from tfp_flowpp.data import streaming
from tfp_flowpp.data import tfds_source
from tfp_flowpp.data import transforms
from tfp_flowpp.data.config import DATASETS
from tfp_flowpp.data.config import DataConfig
from tfp_flowpp.data.errors import DataError
from tfp_flowpp.data.raw_data import checked_raw_data

__all__ = ['from_arrays', 'load_dataset', 'load_raw']

_LOG = logging.getLogger(__name__)

_PATH_KINDS = ('idx', 'folder', 'npz')


def _path_argument(kind, arg):
  if not arg:
    what = 'FILE' if kind == 'npz' else 'DIR'
    raise DataError(f"dataset '{kind}:' needs a path, e.g. {kind}:{what}.")
  return os.path.expanduser(arg)


def load_raw(config):
  """Loads the source named by ``config.dataset``.

  Returns:
    `RawData` for in-memory sources, or a `tfds_source.TfdsSource` for TFDS
    data sets (which decides itself whether to stream).

  Raises:
    DataError: unknown dataset form or any source problem.
  """
  dataset = config.dataset.strip()
  kind, sep, arg = dataset.partition(':')
  if sep and kind in _PATH_KINDS:
    path = _path_argument(kind, arg)
    if kind == 'idx':
      return idx.load_idx_dir(path)
    if kind == 'folder':
      return image_folder.load_image_folder(path, config.image_size)
    return npz.load_npz(path)
  if dataset == 'digits':
    return digits.load_digits()
  if sep and not arg[:1].isdigit():
    # 'name:version' is TFDS syntax; any other prefix is a mistake (and TFDS
    # community prefixes would reach for the network).
    raise DataError(f'unknown dataset {dataset!r}; valid forms: {DATASETS}')
  if dataset in ('fashion_mnist', 'mnist') and not tfds_source.is_prepared(
      dataset, config.data_dir):
    if (dataset == 'fashion_mnist' and
        os.path.isdir(idx.DEBIAN_FASHION_MNIST_DIR)):
      _LOG.info('fashion_mnist is not prepared in TFDS; reading the IDX '
                'files in %s.', idx.DEBIAN_FASHION_MNIST_DIR)
      return idx.load_idx_dir(idx.DEBIAN_FASHION_MNIST_DIR,
                              name='fashion_mnist',
                              class_names=idx.FASHION_MNIST_CLASS_NAMES)
  return tfds_source.TfdsSource(dataset, config)


def load_dataset(config=None):
  """Loads, filters, reduces and splits a data set.

  Args:
    config: A `DataConfig` (default: ``DataConfig()``, the digits).

  Returns:
    An `ImageDataset`.

  Raises:
    DataError: any user-facing problem, with a one-line message saying how
      to fix it.
  """
  if config is None:
    config = DataConfig()
  if not isinstance(config, DataConfig):
    raise DataError(f'load_dataset needs a DataConfig, got '
                    f'{type(config).__name__}.')
  raw = load_raw(config)
  if isinstance(raw, tfds_source.TfdsSource):
    if not raw.fits_in_memory():
      return streaming.streaming_dataset(raw)
    raw = raw.to_raw()
  return dataset_from_raw(raw, config)


def from_arrays(images,
                labels=None,
                *,
                num_levels=256,
                test_images=None,
                test_labels=None,
                class_names=None,
                name='arrays',
                config=None):
  """An `ImageDataset` of numpy arrays already in memory (your own data).

  The arrays get the checks of an ``npz:FILE`` source and then the same
  steps as every in-memory source (classes, crop/resize, bit reduction,
  deterministic split)::

    ds = data.from_arrays(images, labels, config=data.DataConfig(
        validation_size=500, classes=(3,)))
    training.Trainer(model_config, ds.config, train_config, workdir,
                     dataset=ds).run()

  Args:
    images: uint8 ``[N, H, W]`` or ``[N, H, W, C]``, values in
      ``[0, num_levels)``.
    labels: Integer ``[N]`` labels, or None (``config.classes`` needs them).
    num_levels: Pixel levels of ``images`` (256 for 8-bit data).
    test_images: An official test split of the same image shape, or None:
      then ``config.test_size`` images are held out of ``images``.
    test_labels: Labels of ``test_images``; given exactly when ``labels`` is.
    class_names: Names indexed by label, or None.
    name: Data set name (messages, figure titles).
    config: `DataConfig` for ``classes``, ``image_size``, ``num_bits``,
      ``validation_size``, ``test_size``, ``horizontal_flip`` and ``seed``
      (its ``dataset`` and ``data_dir`` are not used); default
      ``DataConfig()``.

  Returns:
    An `ImageDataset` whose ``config`` is ``config``.

  Raises:
    DataError: bad arrays or a config they do not fit, with a one-line
      message.
  """
  if config is None:
    config = DataConfig()
  if not isinstance(config, DataConfig):
    raise DataError(f'from_arrays needs a DataConfig, got '
                    f'{type(config).__name__}.')
  raw = checked_raw_data(
      name, images, labels, num_levels=num_levels, class_names=class_names,
      test_images=test_images, test_labels=test_labels,
      fix='pass uint8 images [N, H, W] or [N, H, W, C] and one integer label '
      'per image.')
  return dataset_from_raw(raw, config)


def dataset_from_raw(raw, config):
  """Builds an in-memory `ImageDataset` from `RawData` and a config."""
  name = raw.name
  num_levels = transforms.check_num_bits(config.num_bits, raw.num_levels,
                                         name)
  images, labels = transforms.filter_classes(
      raw.images, raw.labels, config.classes, name, raw.class_names)
  paths = None
  if raw.paths is not None:
    paths, _ = transforms.filter_classes(
        np.asarray(raw.paths, np.str_), raw.labels, config.classes, name,
        raw.class_names)
  test_images, test_labels = raw.test_images, raw.test_labels
  if test_images is not None and config.classes:
    test_images, test_labels = transforms.filter_classes(
        test_images, test_labels, config.classes, name, raw.class_names,
        check_present=False)

  size = config.image_size
  if size is not None:
    if images.shape[1:3] != (size, size):
      images = transforms.center_crop_resize_np(images, size, raw.num_levels)
    if test_images is not None and test_images.shape[1:3] != (size, size):
      test_images = transforms.center_crop_resize_np(test_images, size,
                                                     raw.num_levels)

  images = transforms.reduce_bits(images, config.num_bits)
  if test_images is not None:
    test_images = transforms.reduce_bits(test_images, config.num_bits)

  indices = splits_lib.split_indices(
      len(images), has_official_test=test_images is not None, config=config,
      name=name)

  def subset(split):
    i = indices[split]
    return pipeline.ArraySplit(images[i],
                               None if labels is None else labels[i],
                               None if paths is None else paths[i])

  backends = {'train': subset('train'), 'validation': subset('validation')}
  if test_images is not None:
    backends['test'] = pipeline.ArraySplit(test_images, test_labels)
  else:
    backends['test'] = subset('test')
  dataset = pipeline.ImageDataset(
      name=name, image_shape=images.shape[1:], num_levels=num_levels,
      splits=backends, class_names=raw.class_names, seed=config.seed,
      horizontal_flip=config.horizontal_flip, config=config,
      class_labels=transforms.model_class_labels(config.classes, labels,
                                                 raw.class_names),
      perturbation_rate=config.perturbation_rate)
  _LOG.info('Loaded %r.', dataset)
  return dataset
