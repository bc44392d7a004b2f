"""Tests for tfp_flowpp.data: sources, splits, resumable batches, baseline."""

import dataclasses
import gzip
import math
import os
import socket
import struct
import subprocess
import sys
import time

import numpy as np
import pytest

from tfp_flowpp import data
from tfp_flowpp.data import idx as idx_lib
from tfp_flowpp.data import reachability
from tfp_flowpp.data import splits as splits_lib
from tfp_flowpp.data import stateless_shuffle
from tfp_flowpp.data import streaming
from tfp_flowpp.data import tfds_source
from tfp_flowpp.data import transforms

# --------------------------------------------------------------------------
# Helpers.


def _raises(fn, *fragments):
  """Calls fn, expects a one-line DataError containing every fragment."""
  with pytest.raises(data.DataError) as info:
    fn()
  message = str(info.value)
  assert '\n' not in message
  for fragment in fragments:
    assert fragment in message, message
  return message


def _take(dataset, n):
  return [b for b in dataset.take(n).as_numpy_iterator()]


def _ids(batch):
  """Image ids of a batch of constant images (every pixel = the id)."""
  return batch.reshape(len(batch), -1)[:, 0].astype(int)


def _write_npz(path, **arrays):
  np.savez(path, **arrays)
  return f'npz:{path}'


@pytest.fixture(scope='module')
def digits():
  return data.load_dataset(data.DataConfig())


@pytest.fixture
def id_npz(tmp_path):
  """100 constant 4x4 images whose pixels all equal their index."""
  images = np.repeat(np.arange(100, dtype=np.uint8), 16).reshape(100, 4, 4)
  return _write_npz(tmp_path / 'ids.npz', images=images)


@pytest.fixture
def gradient_npz(tmp_path):
  """60 uint8 4x6x3 images with distinct left and right halves."""
  rng = np.random.default_rng(1)
  images = rng.integers(0, 256, (60, 4, 6, 3), dtype=np.uint8)
  return _write_npz(tmp_path / 'grad.npz', images=images), images


# --------------------------------------------------------------------------
# DataConfig.


def test_config_fields_have_help_and_defaults():
  fields = {f.name: f for f in dataclasses.fields(data.DataConfig)}
  assert set(fields) == {
      'dataset', 'data_dir', 'classes', 'num_bits', 'image_size',
      'validation_size', 'test_size', 'horizontal_flip', 'seed',
      'perturbation_rate'
  }
  for f in fields.values():
    assert len(f.metadata['help']) > 20, f.name
  cfg = data.DataConfig()
  assert (cfg.dataset, cfg.classes, cfg.validation_size, cfg.test_size,
          cfg.seed) == ('digits', (), 0.1, 0.2, 0)
  assert 'idx:DIR' in data.DATASETS and 'npz:FILE' in data.DATASETS
  # One text: the help of `dataset` is the list errors quote.
  assert data.DATASETS in fields['dataset'].metadata['help']


def test_config_normalises_and_rejects():
  assert data.DataConfig(classes=[3, 1]).classes == (3, 1)
  assert data.DataConfig(validation_size=500.0).validation_size == 500
  _raises(lambda: data.DataConfig(num_bits=9), 'num_bits')
  _raises(lambda: data.DataConfig(num_bits=0), 'num_bits')
  _raises(lambda: data.DataConfig(validation_size=1.5), 'validation_size')
  _raises(lambda: data.DataConfig(test_size=-1), 'test_size')
  _raises(lambda: data.DataConfig(classes=(1, 1)), 'twice')
  _raises(lambda: data.DataConfig(classes='01'), 'classes')
  _raises(lambda: data.DataConfig(image_size=0), 'image_size')
  _raises(lambda: data.DataConfig(seed=-2), 'seed')


def test_data_error_is_one_line_value_error():
  err = data.DataError('first\nsecond')
  assert isinstance(err, ValueError)
  assert str(err) == 'first second'


# --------------------------------------------------------------------------
# Digits, splits and determinism.


def test_digits_shapes_levels_and_split_sizes(digits):
  assert digits.name == 'digits'
  assert digits.image_shape == (8, 8, 1)
  assert digits.num_levels == 17
  assert digits.class_names == [str(i) for i in range(10)]
  # 1797 -> test round(0.2 * 1797) = 359, validation round(0.1 * 1438) = 144.
  assert digits.num_examples == {'train': 1294, 'validation': 144,
                                 'test': 359}
  for split, n in digits.num_examples.items():
    x = digits.arrays(split)
    assert x.dtype == np.uint8 and x.shape == (n, 8, 8, 1)
    assert x.max() == 16
    assert digits.labels(split).shape == (n,)
  assert digits.steps_per_epoch(100) == 12


def test_split_indices_partition_every_example():
  cfg = data.DataConfig(validation_size=0.1, test_size=0.2, seed=3)
  parts = splits_lib.split_indices(1797, False, cfg, 'x')
  joined = np.concatenate([parts['train'], parts['validation'],
                           parts['test']])
  assert sorted(joined.tolist()) == list(range(1797))
  for p in parts.values():
    assert np.all(np.diff(p) > 0)  # Sorted, no repeats.
  official = splits_lib.split_indices(100, True, cfg, 'x')
  assert official['test'] is None
  assert len(official['validation']) == 10 and len(official['train']) == 90


def test_split_counts_and_errors():
  cfg = data.DataConfig(validation_size=7, test_size=0)
  parts = splits_lib.split_indices(50, False, cfg, 'x')
  assert [len(parts[s]) for s in ('train', 'validation', 'test')] == [43, 7, 0]
  _raises(lambda: splits_lib.split_indices(
      5, True, data.DataConfig(validation_size=5), 'tiny'), 'validation_size')


def test_same_config_same_splits_and_batches_across_processes(digits):
  """A fresh interpreter (other hash seed) sees identical data."""
  script = (
      'import hashlib, numpy as np\n'
      'from tfp_flowpp import data\n'
      'ds = data.load_dataset(data.DataConfig(horizontal_flip=True))\n'
      'h = hashlib.sha256()\n'
      'for s in data.SPLITS: h.update(ds.arrays(s).tobytes())\n'
      'for b in ds.train_batches(64, start_step=5).take(3):\n'
      '  h.update(b.numpy().tobytes())\n'
      'print(h.hexdigest())\n')
  env = dict(os.environ, PYTHONHASHSEED='12345', TF_CPP_MIN_LOG_LEVEL='3')
  env['PYTHONPATH'] = os.pathsep.join(
      [os.path.dirname(os.path.dirname(os.path.abspath(__file__)))] +
      [p for p in [os.environ.get('PYTHONPATH')] if p])
  out = subprocess.run([sys.executable, '-c', script], env=env, check=True,
                       capture_output=True, text=True, timeout=120)
  import hashlib  # pylint: disable=g-import-not-at-top
  ds = data.load_dataset(data.DataConfig(horizontal_flip=True))
  h = hashlib.sha256()
  for s in data.SPLITS:
    h.update(ds.arrays(s).tobytes())
  for b in _take(ds.train_batches(64, start_step=5), 3):
    h.update(b.tobytes())
  assert out.stdout.strip().splitlines()[-1] == h.hexdigest()
  # And the flip-free splits equal the shared fixture's.
  for s in data.SPLITS:
    np.testing.assert_array_equal(ds.arrays(s), digits.arrays(s))


def test_seed_changes_the_split(digits):
  other = data.load_dataset(data.DataConfig(seed=1))
  assert other.num_examples == digits.num_examples
  assert not np.array_equal(other.arrays('test'), digits.arrays('test'))


def test_class_filtering(digits):
  from sklearn import datasets  # pylint: disable=g-import-not-at-top
  target = datasets.load_digits().target
  ds = data.load_dataset(data.DataConfig(classes=(3, 5)))
  assert sum(ds.num_examples.values()) == np.isin(target, [3, 5]).sum()
  for split in data.SPLITS:
    assert set(np.unique(ds.labels(split))) == {3, 5}
  assert ds.class_names == digits.class_names
  _raises(lambda: data.load_dataset(data.DataConfig(classes=(11,))),
          '[11]', '0 (0)')


def test_batch_size_errors(digits):
  _raises(lambda: digits.steps_per_epoch(5000), 'batch_size=5000', '1294')
  _raises(lambda: digits.train_batches(0), 'batch_size')
  _raises(lambda: digits.train_batches(8, start_step=-1), 'start_step')
  _raises(lambda: digits.arrays('valid'), 'unknown split')


# --------------------------------------------------------------------------
# Training batches: determinism, epochs, exact resume, flips.


def test_train_batches_are_permutations_per_epoch(id_npz):
  ds = data.load_dataset(data.DataConfig(dataset=id_npz, test_size=0,
                                         validation_size=0))
  assert ds.num_examples['train'] == 100
  spe = ds.steps_per_epoch(30)
  assert spe == 3
  batches = _take(ds.train_batches(30), 2 * spe)
  assert all(b.shape == (30, 4, 4, 1) and b.dtype == np.uint8
             for b in batches)
  epoch0 = np.concatenate([_ids(b) for b in batches[:spe]])
  epoch1 = np.concatenate([_ids(b) for b in batches[spe:]])
  assert len(set(epoch0)) == 90 and len(set(epoch1)) == 90
  assert not np.array_equal(epoch0, epoch1)
  assert not np.array_equal(epoch0, np.sort(epoch0))  # Shuffled.
  again = _take(ds.train_batches(30), 2 * spe)
  np.testing.assert_array_equal(np.stack(batches), np.stack(again))


@pytest.mark.parametrize('flip', [False, True])
def test_resume_is_exact_across_epoch_boundaries(flip):
  ds = data.load_dataset(data.DataConfig(horizontal_flip=flip))
  spe = ds.steps_per_epoch(100)  # 12
  fresh = _take(ds.train_batches(100), 3 * spe + 2)
  for k in (1, spe - 1, spe, 2 * spe + 5):
    resumed = _take(ds.train_batches(100, start_step=k), len(fresh) - k)
    np.testing.assert_array_equal(np.stack(resumed), np.stack(fresh[k:]))


def test_horizontal_flip_mirrors_about_half_the_images():
  plain = data.load_dataset(data.DataConfig())
  flipped = data.load_dataset(data.DataConfig(horizontal_flip=True))
  a = np.concatenate(_take(plain.train_batches(100), 12))
  b = np.concatenate(_take(flipped.train_batches(100), 12))
  same = np.all(a == b, axis=(1, 2, 3))
  mirrored = np.all(a[:, :, ::-1] == b, axis=(1, 2, 3))
  assert np.all(same | mirrored)
  changed = mirrored & ~same
  assert 0.4 < changed.mean() < 0.6  # 1200 draws of a fair coin.
  # Keyed by the global step: batch i of epoch 1 gets new coins, not the
  # coins of batch i of epoch 0.
  symmetric = np.all(a == a[:, :, ::-1], axis=(1, 2, 3))
  coins = mirrored & ~symmetric
  epoch1 = np.concatenate(_take(flipped.train_batches(100, start_step=12), 12))
  plain1 = np.concatenate(_take(plain.train_batches(100, start_step=12), 12))
  coins1 = (np.all(plain1[:, :, ::-1] == epoch1, axis=(1, 2, 3)) &
            ~np.all(plain1 == plain1[:, :, ::-1], axis=(1, 2, 3)))
  both = ~symmetric & ~np.all(plain1 == plain1[:, :, ::-1], axis=(1, 2, 3))
  assert not np.array_equal(coins[both], coins1[both])
  # Eval batches are never flipped.
  ev = np.concatenate(_take(flipped.eval_batches('test', 100), 10))
  np.testing.assert_array_equal(ev, plain.arrays('test'))


def test_resume_start_step_is_cheap():
  ds = data.load_dataset(data.DataConfig())
  start = time.perf_counter()
  batch = _take(ds.train_batches(32, start_step=10**7), 1)[0]
  assert time.perf_counter() - start < 5.0
  assert batch.shape == (32, 8, 8, 1)


# --------------------------------------------------------------------------
# Eval batches.


def test_eval_batches_cover_each_image_once_in_order(digits):
  for split in data.SPLITS:
    batches = _take(digits.eval_batches(split, 50), 1000)
    n = digits.num_examples[split]
    assert [len(b) for b in batches] == [50] * (n // 50) + (
        [n % 50] if n % 50 else [])
    np.testing.assert_array_equal(np.concatenate(batches),
                                  digits.arrays(split))


# --------------------------------------------------------------------------
# num_bits and image_size.


def test_num_bits_reduces_8bit_data(gradient_npz):
  source, images = gradient_npz
  full = data.load_dataset(data.DataConfig(dataset=source))
  five = data.load_dataset(data.DataConfig(dataset=source, num_bits=5))
  assert full.num_levels == 256 and five.num_levels == 32
  for split in data.SPLITS:
    np.testing.assert_array_equal(five.arrays(split),
                                  full.arrays(split) >> 3)
  assert five.arrays('train').max() <= 31
  all_images = np.concatenate([full.arrays(s) for s in data.SPLITS])
  assert sorted(all_images.reshape(60, -1)[:, 0]) == sorted(
      images.reshape(60, -1)[:, 0])


def test_num_bits_on_digits_is_an_error():
  _raises(lambda: data.load_dataset(data.DataConfig(num_bits=4)),
          'num_bits=4', '17 levels')


@pytest.mark.parametrize('tall', [False, True])
def test_image_size_center_crops_and_resizes(tmp_path, tall):
  rng = np.random.default_rng(2)
  images = rng.integers(0, 256, (20, 4, 7, 3), dtype=np.uint8)
  center = images[:, :, 1:5]  # Width 7 -> columns 1..4.
  if tall:
    images, center = images.transpose(0, 2, 1, 3), center.transpose(
        0, 2, 1, 3)
  cfg = dict(test_size=0, validation_size=0)
  source = _write_npz(tmp_path / 'g.npz', images=images)
  crop = data.load_dataset(data.DataConfig(dataset=source, image_size=4,
                                           **cfg))
  assert crop.image_shape == (4, 4, 3)
  np.testing.assert_array_equal(crop.arrays('train'), center)
  half = data.load_dataset(data.DataConfig(dataset=source, image_size=2,
                                           **cfg))
  block_means = center.astype(float).reshape(20, 2, 2, 2, 2, 3).mean(
      axis=(2, 4))
  assert half.image_shape == (2, 2, 3)
  assert np.abs(half.arrays('train') - block_means).max() <= 0.5 + 1e-4
  double = data.load_dataset(data.DataConfig(dataset=source, image_size=8,
                                             **cfg))
  assert double.image_shape == (8, 8, 3)
  assert np.abs(double.arrays('train')[:, 1::2, 1::2].astype(int) -
                center).max() <= 128  # Bilinear, rounded, in range.


def test_image_size_keeps_digits_levels():
  ds = data.load_dataset(data.DataConfig(image_size=4))
  assert ds.image_shape == (4, 4, 1) and ds.num_levels == 17
  x = ds.arrays('train')
  assert x.max() <= 16 and x.max() >= 12


# --------------------------------------------------------------------------
# IDX files.


def _idx_bytes(array, magic_type=0x08):
  array = np.asarray(array, np.uint8)
  header = struct.pack('>BBBB', 0, 0, magic_type, array.ndim)
  header += struct.pack(f'>{array.ndim}I', *array.shape)
  return header + array.tobytes()


def _write_idx_dir(directory, n_train=20, n_test=6, gz=True, hw=(5, 4)):
  directory.mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng(0)
  arrays = {
      'train-images-idx3-ubyte': rng.integers(0, 256, (n_train,) + hw),
      'train-labels-idx1-ubyte': np.arange(n_train) % 3,
      't10k-images-idx3-ubyte': rng.integers(0, 256, (n_test,) + hw),
      't10k-labels-idx1-ubyte': np.arange(n_test) % 3,
  }
  for name, array in arrays.items():
    raw = _idx_bytes(array)
    if gz:
      with gzip.open(directory / (name + '.gz'), 'wb') as f:
        f.write(raw)
    else:
      (directory / name).write_bytes(raw)
  return {k: np.asarray(v, np.uint8) for k, v in arrays.items()}


@pytest.mark.parametrize('gz', [True, False])
def test_idx_directory(tmp_path, gz):
  arrays = _write_idx_dir(tmp_path / 'mnistish', gz=gz)
  ds = data.load_dataset(data.DataConfig(dataset=f'idx:{tmp_path}/mnistish',
                                         validation_size=4))
  assert ds.name == 'idx:mnistish'
  assert ds.image_shape == (5, 4, 1) and ds.num_levels == 256
  assert ds.num_examples == {'train': 16, 'validation': 4, 'test': 6}
  np.testing.assert_array_equal(ds.arrays('test')[..., 0],
                                arrays['t10k-images-idx3-ubyte'])
  np.testing.assert_array_equal(ds.labels('test'), np.arange(6) % 3)
  train_val = np.concatenate([ds.arrays('train'), ds.arrays('validation')])
  assert sorted(map(bytes, train_val)) == sorted(
      map(bytes, arrays['train-images-idx3-ubyte'][..., None]))


def test_read_idx_rejects_corrupt_files(tmp_path):
  good = _idx_bytes(np.zeros((3, 2, 2)))
  (tmp_path / 'short').write_bytes(good[:-1])
  _raises(lambda: idx_lib.read_idx(str(tmp_path / 'short')), 'truncated',
          '12 data bytes')
  (tmp_path / 'long').write_bytes(good + b'x')
  _raises(lambda: idx_lib.read_idx(str(tmp_path / 'long')), '1 bytes after')
  (tmp_path / 'magic').write_bytes(b'PK\x03\x04' + good[4:])
  _raises(lambda: idx_lib.read_idx(str(tmp_path / 'magic')), 'not an IDX')
  (tmp_path / 'labels').write_bytes(_idx_bytes(np.zeros(3)))
  _raises(lambda: idx_lib.read_idx(str(tmp_path / 'labels'), 2051),
          'magic number 2049')
  gz = gzip.compress(good)
  (tmp_path / 'cut.gz').write_bytes(gz[:len(gz) // 2])
  _raises(lambda: idx_lib.read_idx(str(tmp_path / 'cut.gz')), 'cut.gz')
  (tmp_path / 'good').write_bytes(_idx_bytes(np.arange(12).reshape(3, 2, 2)))
  np.testing.assert_array_equal(idx_lib.read_idx(str(tmp_path / 'good')),
                                np.arange(12).reshape(3, 2, 2))


def test_idx_directory_errors(tmp_path):
  _raises(lambda: data.load_dataset(
      data.DataConfig(dataset=f'idx:{tmp_path}/nope')), 'does not exist')
  (tmp_path / 'empty').mkdir()
  _raises(lambda: data.load_dataset(
      data.DataConfig(dataset=f'idx:{tmp_path}/empty')),
          'train-images-idx3-ubyte')
  _write_idx_dir(tmp_path / 'nolabels')
  os.remove(tmp_path / 'nolabels' / 't10k-labels-idx1-ubyte.gz')
  _raises(lambda: data.load_dataset(
      data.DataConfig(dataset=f'idx:{tmp_path}/nolabels')),
          't10k-labels-idx1-ubyte')


def test_fashion_mnist_name_falls_back_to_debian_dir(tmp_path, monkeypatch):
  arrays = _write_idx_dir(tmp_path / 'fm', hw=(28, 28))
  monkeypatch.setattr(idx_lib, 'DEBIAN_FASHION_MNIST_DIR',
                      str(tmp_path / 'fm'))
  ds = data.load_dataset(data.DataConfig(dataset='fashion_mnist',
                                         data_dir=str(tmp_path / 'tfds'),
                                         validation_size=0))
  assert ds.name == 'fashion_mnist'
  assert ds.class_names[0] == 'T-shirt/top'
  np.testing.assert_array_equal(ds.arrays('test')[..., 0],
                                arrays['t10k-images-idx3-ubyte'])


@pytest.mark.skipif(not os.path.isdir(idx_lib.DEBIAN_FASHION_MNIST_DIR),
                    reason='Debian dataset-fashion-mnist is not installed')
def test_real_fashion_mnist_headers():
  d = idx_lib.DEBIAN_FASHION_MNIST_DIR
  expect = {('train', 'images-idx3'): (2051, (60000, 28, 28)),
            ('train', 'labels-idx1'): (2049, (60000,)),
            ('t10k', 'images-idx3'): (2051, (10000, 28, 28)),
            ('t10k', 'labels-idx1'): (2049, (10000,))}
  for (prefix, kind), (magic, shape) in expect.items():
    path = idx_lib.find_idx_file(d, prefix, kind)
    assert path is not None, (prefix, kind)
    got_magic, dtype, got_shape = idx_lib.read_idx_header(path)
    assert (got_magic, got_shape) == (magic, shape)
    assert dtype == np.uint8  # 256 levels.


# --------------------------------------------------------------------------
# Image folders.


def _save(path, array, fmt=None):
  from PIL import Image  # pylint: disable=g-import-not-at-top
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(array).save(path, format=fmt)


def test_folder_with_class_subfolders_png_and_jpeg(tmp_path):
  rng = np.random.default_rng(0)
  pngs = {}
  for cls in ('cat', 'ant'):
    for i in range(5):
      a = rng.integers(0, 256, (6, 7), dtype=np.uint8)
      pngs[(cls, i)] = a
      _save(tmp_path / cls / f'{i}.png', a)
  _save(tmp_path / 'ant' / 'sub' / 'flat.jpg', np.full((6, 7), 100,
                                                        np.uint8))
  (tmp_path / 'README.txt').write_text('ignored')
  ds = data.load_dataset(data.DataConfig(dataset=f'folder:{tmp_path}',
                                         test_size=0, validation_size=0))
  assert ds.class_names == ['ant', 'cat']
  assert ds.image_shape == (6, 7, 1) and ds.num_levels == 256
  x, y = ds.arrays('train'), ds.labels('train')
  assert len(x) == 11 and np.bincount(y).tolist() == [6, 5]
  # Sorted paths: ant/0..4.png, ant/sub/flat.jpg, cat/0..4.png.
  np.testing.assert_array_equal(x[0, ..., 0], pngs[('ant', 0)])
  np.testing.assert_array_equal(x[6, ..., 0], pngs[('cat', 0)])
  assert np.abs(x[5].astype(int) - 100).max() <= 2  # Lossy JPEG.


def test_folder_channels_rgba_and_mixed(tmp_path):
  rgba = np.zeros((4, 4, 4), np.uint8)
  rgba[..., 0], rgba[..., 3] = 200, 7
  _save(tmp_path / 'rgba' / 'a.png', rgba)
  ds = data.load_dataset(data.DataConfig(dataset=f'folder:{tmp_path}/rgba',
                                         test_size=0, validation_size=0))
  assert ds.image_shape == (4, 4, 3)
  np.testing.assert_array_equal(ds.arrays('train')[0], rgba[..., :3])
  assert ds.class_names is None

  _save(tmp_path / 'mixed' / 'a.png', np.full((4, 4), 9, np.uint8))
  _save(tmp_path / 'mixed' / 'b.png', np.full((4, 4, 3), 50, np.uint8))
  _save(tmp_path / 'mixed' / 'c.png', np.full((4, 4), 1, np.uint8))
  ds = data.load_dataset(data.DataConfig(dataset=f'folder:{tmp_path}/mixed',
                                         test_size=1, validation_size=0))
  assert ds.image_shape == (4, 4, 3)
  everything = np.concatenate([ds.arrays('train'), ds.arrays('test')])
  assert sorted(everything[:, 0, 0, 0].tolist()) == [1, 9, 50]
  assert np.all(everything == everything[:, :1, :1, :1])  # Gray -> R=G=B.


def test_folder_errors(tmp_path):
  (tmp_path / 'empty').mkdir()
  _raises(lambda: data.load_dataset(
      data.DataConfig(dataset=f'folder:{tmp_path}/empty')), 'no .png')
  _raises(lambda: data.load_dataset(
      data.DataConfig(dataset=f'folder:{tmp_path}/missing')),
          'does not exist')
  _save(tmp_path / 'bad' / 'ok.png', np.zeros((3, 3), np.uint8))
  (tmp_path / 'bad' / 'broken.png').write_text('not an image')
  _raises(lambda: data.load_dataset(
      data.DataConfig(dataset=f'folder:{tmp_path}/bad')), 'broken.png',
          'not a decodable image')
  _save(tmp_path / 'sizes' / 'a.png', np.zeros((3, 5), np.uint8))
  _save(tmp_path / 'sizes' / 'b.png', np.zeros((4, 4), np.uint8))
  _raises(lambda: data.load_dataset(
      data.DataConfig(dataset=f'folder:{tmp_path}/sizes')), 'a.png', '5x3',
          'b.png', '4x4', 'image_size')
  ds = data.load_dataset(data.DataConfig(dataset=f'folder:{tmp_path}/sizes',
                                         image_size=2, test_size=0,
                                         validation_size=0))
  assert ds.arrays('train').shape == (2, 2, 2, 1)


# --------------------------------------------------------------------------
# npz files.


def test_npz_with_labels_and_official_test(tmp_path):
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (30, 3, 3, 2), dtype=np.uint8)
  test = rng.integers(0, 256, (7, 3, 3, 2), dtype=np.uint8)
  source = _write_npz(tmp_path / 'd.npz', images=images,
                      labels=np.arange(30) % 2, test_images=test,
                      test_labels=np.arange(7) % 2)
  ds = data.load_dataset(data.DataConfig(dataset=source, validation_size=5,
                                         classes=(1,)))
  assert ds.name == 'npz:d' and ds.image_shape == (3, 3, 2)
  assert ds.num_examples == {'train': 10, 'validation': 5, 'test': 3}
  np.testing.assert_array_equal(ds.arrays('test'), test[1::2])
  np.testing.assert_array_equal(ds.labels('test'), [1, 1, 1])


def test_npz_keras_keys_and_num_levels(tmp_path):
  source = _write_npz(tmp_path / 'k.npz',
                      x_train=np.full((10, 2, 2), 3, np.uint8),
                      y_train=np.arange(10), x_test=np.ones((4, 2, 2),
                                                            np.uint8),
                      y_test=np.arange(4), num_levels=np.array(4))
  ds = data.load_dataset(data.DataConfig(dataset=source, validation_size=0))
  assert ds.num_levels == 4 and ds.num_examples['test'] == 4
  assert ds.image_shape == (2, 2, 1)


def test_npz_errors(tmp_path):
  _raises(lambda: data.load_dataset(
      data.DataConfig(dataset=f'npz:{tmp_path}/none.npz')), 'does not exist')
  src = _write_npz(tmp_path / 'keys.npz', pixels=np.zeros((2, 2, 2),
                                                          np.uint8))
  _raises(lambda: data.load_dataset(data.DataConfig(dataset=src)),
          "['pixels']", "'images'")
  src = _write_npz(tmp_path / 'float.npz', images=np.zeros((5, 2, 2)))
  _raises(lambda: data.load_dataset(data.DataConfig(dataset=src)),
          'float64', 'uint8')
  src = _write_npz(tmp_path / 'rank.npz', images=np.zeros((5, 2), np.uint8))
  _raises(lambda: data.load_dataset(data.DataConfig(dataset=src)),
          '(5, 2)', '[N, H, W]')
  src = _write_npz(tmp_path / 'lab.npz', images=np.zeros((5, 2, 2),
                                                         np.uint8),
                   labels=np.arange(4))
  _raises(lambda: data.load_dataset(data.DataConfig(dataset=src)),
          '4 labels for 5 images')
  (tmp_path / 'junk.npz').write_text('junk')
  _raises(lambda: data.load_dataset(
      data.DataConfig(dataset=f'npz:{tmp_path}/junk.npz')), 'cannot read')
  _raises(lambda: data.load_dataset(data.DataConfig(dataset='npz:')),
          'needs a path')


# --------------------------------------------------------------------------
# In-memory arrays.


def test_from_arrays_matches_the_npz_source(tmp_path):
  rng = np.random.default_rng(3)
  images = rng.integers(0, 256, (40, 6, 6, 3), dtype=np.uint8)
  labels = np.arange(40) % 4
  test = rng.integers(0, 256, (9, 6, 6, 3), dtype=np.uint8)
  test_labels = np.arange(9) % 4
  cfg = dict(validation_size=0.25, classes=(1, 3), num_bits=5, image_size=4,
             seed=7)
  source = _write_npz(tmp_path / 'own.npz', images=images, labels=labels,
                      test_images=test, test_labels=test_labels)
  from_file = data.load_dataset(data.DataConfig(dataset=source, **cfg))
  own = data.from_arrays(images, labels, test_images=test,
                         test_labels=test_labels, name='own',
                         config=data.DataConfig(**cfg))
  assert own.name == 'own' and own.config == data.DataConfig(**cfg)
  assert own.num_examples == from_file.num_examples
  assert (own.image_shape, own.num_levels) == ((4, 4, 3), 32)
  for split in data.SPLITS:
    np.testing.assert_array_equal(own.arrays(split), from_file.arrays(split))
    np.testing.assert_array_equal(own.labels(split), from_file.labels(split))
  # Without an official test split, test_size images are held out.
  held = data.from_arrays(images[..., 0], num_levels=256,
                          config=data.DataConfig(test_size=10,
                                                 validation_size=5))
  assert held.num_examples == {'train': 25, 'validation': 5, 'test': 10}
  assert held.image_shape == (6, 6, 1) and held.labels('train') is None


def test_from_arrays_errors():
  good = np.zeros((6, 2, 2), np.uint8)
  _raises(lambda: data.from_arrays(good.astype(np.float32)), 'images',
          'float32', 'uint8')
  _raises(lambda: data.from_arrays(good[0]), '(2, 2)', '[N, H, W]')
  _raises(lambda: data.from_arrays(good, np.arange(5)),
          '5 labels for 6 images')
  _raises(lambda: data.from_arrays(good, test_images=np.zeros(
      (2, 3, 2), np.uint8)), 'test_images', '(3, 2, 1)', '(2, 2, 1)')
  _raises(lambda: data.from_arrays(good, np.arange(6), test_images=good),
          'only one')
  _raises(lambda: data.from_arrays(good, test_labels=np.arange(6)),
          'test_labels', 'without')
  _raises(lambda: data.from_arrays(good + 4, num_levels=4), 'value 4',
          'num_levels')
  _raises(lambda: data.from_arrays(good, num_levels=300), 'num_levels',
          '2..256')
  _raises(lambda: data.from_arrays(good, np.arange(6), class_names=['a']),
          '1 class_names', 'label 5')
  _raises(lambda: data.from_arrays(good, config={'seed': 1}), 'DataConfig')
  _raises(lambda: data.from_arrays(good, config=data.DataConfig(
      test_size=6)), 'test_size=6')
  _raises(lambda: data.from_arrays(good, np.arange(6), config=data.DataConfig(
      classes=(9,))), '9')


# --------------------------------------------------------------------------
# Streaming helpers: the stateless window shuffle, the reachability probe.


def _shuffled(window, seed, epoch, n=50):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  ds = tf.data.Dataset.range(n).map(lambda i: (i, -i))
  out = list(stateless_shuffle.window_shuffle(ds, window, seed,
                                              epoch).as_numpy_iterator())
  assert all(a == -b for a, b in out)  # Tuple parts stay together.
  return [int(a) for a, _ in out]


def test_window_shuffle_is_a_seeded_local_permutation():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  order = _shuffled(8, seed=3, epoch=0)
  assert sorted(order) == list(range(50)) and order != list(range(50))
  # Rotated by < window, then permuted within windows: nothing moves far
  # (around the circle: the first elements of the file move to the end).
  assert max(min(abs(p - x), 50 - abs(p - x))
             for p, x in enumerate(order)) < 2 * 8
  assert _shuffled(8, seed=3, epoch=0) == order
  assert _shuffled(8, seed=3, epoch=1) != order
  assert _shuffled(8, seed=4, epoch=0) != order
  assert _shuffled(1, seed=3, epoch=0) == list(range(50))
  # The window boundaries move: windows are not always the aligned blocks.
  assert any(
      set(_shuffled(8, seed=3, epoch=e)[:8]) != set(range(8))
      for e in range(3))
  try:
    tf.random.set_seed(99)  # The global seed plays no part.
    assert _shuffled(8, seed=3, epoch=0) == order
  finally:
    tf.random.set_seed(None)


def test_reachability_probe_and_proxies(monkeypatch):
  with socket.socket() as server:
    server.bind(('127.0.0.1', 0))
    server.listen(1)
    open_port = server.getsockname()[1]
    with socket.socket() as closed:
      closed.bind(('127.0.0.1', 0))
      closed_port = closed.getsockname()[1]  # Bound, not listening.
      result = reachability.unreachable(
          {('127.0.0.1', open_port), ('127.0.0.1', closed_port)}, 2.)
  assert list(result) == [('127.0.0.1', closed_port)]
  assert result[('127.0.0.1', closed_port)]  # The reason, e.g. refused.
  for name in ('http_proxy', 'https_proxy', 'all_proxy', 'no_proxy'):
    monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv(name.upper(), raising=False)
  urls = ['https://example.org/a.tgz', 'http://data.test:8080/b', 'file:x']
  assert reachability.download_addresses(urls) == {('example.org', 443),
                                                   ('data.test', 8080)}
  monkeypatch.setenv('https_proxy', 'http://proxy.test:3129')
  monkeypatch.setenv('no_proxy', 'data.test')
  assert reachability.download_addresses(urls) == {('proxy.test', 3129),
                                                   ('data.test', 8080)}


# --------------------------------------------------------------------------
# TFDS.


def _online(host, port):
  try:
    with socket.create_connection((host, port), timeout=3):
      return True
  except OSError:
    return False


def test_tfds_offline_fails_fast(tmp_path):
  if _online('www.cs.toronto.edu', 443):
    pytest.skip('online: loading cifar10 would download it')
  start = time.monotonic()
  _raises(lambda: data.load_dataset(
      data.DataConfig(dataset='cifar10', data_dir=str(tmp_path))),
          "'cifar10' is not prepared", 'tfds build cifar10 --data_dir',
          'www.cs.toronto.edu')
  assert time.monotonic() - start < 15
  assert not list(tmp_path.iterdir())  # Nothing downloaded or created.


def test_tfds_unreachable_host_fails_fast_even_if_connect_hangs(
    tmp_path, monkeypatch):
  def hang(*args, **kwargs):
    # A connect that hangs, then fails like a real one would (the daemon
    # probe thread outlives the test; it must not end in an odd exception).
    del args, kwargs
    time.sleep(30)
    raise socket.timeout('timed out')

  monkeypatch.setattr(socket, 'create_connection', hang)
  monkeypatch.setattr(tfds_source, 'CONNECT_TIMEOUT_SECONDS', 0.5)
  start = time.monotonic()
  _raises(lambda: data.load_dataset(
      data.DataConfig(dataset='mnist', data_dir=str(tmp_path))),
          'storage.googleapis.com', 'timed out', 'idx:DIR')
  assert time.monotonic() - start < 5


def test_unknown_dataset_names():
  msg = _raises(lambda: data.load_dataset(
      data.DataConfig(dataset='no_such_dataset_xyz')), 'no_such_dataset_xyz',
                'idx:DIR', 'folder:DIR', 'npz:FILE')
  assert len(msg) < 1000
  _raises(lambda: data.load_dataset(data.DataConfig(dataset='hub:thing')),
          'unknown dataset')


@pytest.fixture(scope='module')
def tiny_tfds(tmp_path_factory):
  """A tiny TFDS data set built offline from in-code examples."""
  tfds = pytest.importorskip('tensorflow_datasets')

  class FlowppTinyImages(tfds.core.GeneratorBasedBuilder):
    """50 train + 10 test random 6x5x1 images, labels a/b/c."""
    VERSION = tfds.core.Version('1.0.0')

    def _info(self):
      return tfds.core.DatasetInfo(
          builder=self,
          features=tfds.features.FeaturesDict({
              'image': tfds.features.Image(shape=(6, 5, 1)),
              'label': tfds.features.ClassLabel(names=['a', 'b', 'c']),
          }))

    def _split_generators(self, dl_manager):
      del dl_manager
      return {'train': self._generate_examples(50, 0),
              'test': self._generate_examples(10, 1)}

    def _generate_examples(self, n, seed):
      rng = np.random.default_rng(seed)
      for i in range(n):
        yield i, {'image': rng.integers(0, 256, (6, 5, 1), dtype=np.uint8),
                  'label': i % 3}

  data_dir = str(tmp_path_factory.mktemp('tfds'))
  FlowppTinyImages(data_dir=data_dir).download_and_prepare()
  return 'flowpp_tiny_images', data_dir


def test_tfds_in_memory_and_streaming_agree(tiny_tfds, monkeypatch):
  name, data_dir = tiny_tfds
  cfg = data.DataConfig(dataset=name, data_dir=data_dir, validation_size=5,
                        num_bits=6, image_size=4, horizontal_flip=True)
  memory = data.load_dataset(cfg)
  assert not memory.streaming
  assert memory.num_examples == {'train': 45, 'validation': 5, 'test': 10}
  assert memory.class_names == ['a', 'b', 'c'] and memory.num_levels == 64
  assert memory.image_shape == (4, 4, 1)
  assert memory.arrays('test').max() <= 63
  plain = data.load_dataset(data.DataConfig(dataset=name, data_dir=data_dir))
  np.testing.assert_array_equal(
      memory.arrays('test'),
      transforms.center_crop_resize_np(plain.arrays('test'), 4, 256) >> 2)
  monkeypatch.setattr(tfds_source, 'IN_MEMORY_LIMIT_BYTES', 0)
  stream = data.load_dataset(cfg)
  assert stream.streaming
  assert stream.num_examples == memory.num_examples
  assert stream.image_shape == memory.image_shape
  for split in data.SPLITS:
    got = np.concatenate(_take(stream.eval_batches(split, 4), 100))
    np.testing.assert_array_equal(got, memory.arrays(split))
  _raises(lambda: stream.arrays('train'), 'streams from TFDS')


def memory_train(name, data_dir):
  return data.load_dataset(data.DataConfig(
      dataset=name, data_dir=data_dir, validation_size=5,
      classes=(0, 2))).arrays('train')


def test_tfds_streaming_resume_is_exact(tiny_tfds, monkeypatch):
  name, data_dir = tiny_tfds
  train = memory_train(name, data_dir)
  monkeypatch.setattr(tfds_source, 'IN_MEMORY_LIMIT_BYTES', 0)
  monkeypatch.setattr(streaming, 'SHUFFLE_BUFFER', 7)  # Several windows.
  ds = data.load_dataset(data.DataConfig(dataset=name, data_dir=data_dir,
                                         validation_size=5,
                                         horizontal_flip=True, classes=(0,
                                                                        2)))
  assert ds.streaming and ds.num_examples['test'] == 7
  spe = ds.steps_per_epoch(8)
  assert ds.num_examples['train'] // 8 == spe
  fresh = _take(ds.train_batches(8), 2 * spe + 2)
  assert all(b.shape == (8, 6, 5, 1) for b in fresh)

  def keys(batches):  # Flip-invariant identity of each image.
    return [min(x.tobytes(), x[:, ::-1].tobytes())
            for b in batches for x in b]

  train_keys = set(keys([train]))
  epoch0, epoch1 = keys(fresh[:spe]), keys(fresh[spe:2 * spe])
  assert len(set(epoch0)) == len(epoch0) == 8 * spe
  assert set(epoch0) <= train_keys and set(epoch1) <= train_keys
  assert epoch0 != epoch1  # Reshuffled each epoch.
  for k in (1, spe, spe + 1):
    resumed = _take(ds.train_batches(8, start_step=k), len(fresh) - k)
    np.testing.assert_array_equal(np.stack(resumed), np.stack(fresh[k:]))
  # A trainer's global seed must not change the order.
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  try:
    tf.random.set_seed(1234)
    seeded = _take(ds.train_batches(8, start_step=spe), len(fresh) - spe)
  finally:
    tf.random.set_seed(None)
  np.testing.assert_array_equal(np.stack(seeded), np.stack(fresh[spe:]))


# --------------------------------------------------------------------------
# Histogram baseline.


def test_histogram_baseline_closed_forms():
  train = np.zeros((10, 3, 2), np.uint8)
  ones = np.ones((4, 3, 2), np.uint8)
  zeros = np.zeros((4, 3, 2), np.uint8)
  # p(0) = (10 + 1) / (10 + 4), p(v != 0) = 1 / 14 with L = 4, a = 1.
  assert data.per_pixel_histogram_bpd(train, ones, 4) == pytest.approx(
      math.log2(14))
  assert data.per_pixel_histogram_bpd(train, zeros, 4) == pytest.approx(
      math.log2(14 / 11))
  assert data.per_pixel_histogram_bpd(
      train, ones, 4, pseudocount=0.5) == pytest.approx(math.log2(12 / 0.5))
  empty = np.zeros((0, 3, 2), np.uint8)
  assert data.per_pixel_histogram_bpd(empty, ones, 4) == pytest.approx(2.0)


def test_histogram_baseline_matches_brute_force():
  rng = np.random.default_rng(0)
  train = rng.integers(0, 5, (40, 3))
  test = rng.integers(0, 5, (9, 3))
  total = 0.
  for x in test:
    for d in range(3):
      total -= math.log2(((train[:, d] == x[d]).sum() + 0.7) / (40 + 0.7 * 5))
  assert data.per_pixel_histogram_bpd(train, test, 5, 0.7) == pytest.approx(
      total / 27)
  _raises(lambda: data.per_pixel_histogram_bpd(train, test, 4), 'outside')
  _raises(lambda: data.per_pixel_histogram_bpd(train, test[:, :2], 5),
          'shape')


def test_histogram_baseline_on_digits_beats_uniform(digits):
  bpd = data.per_pixel_histogram_bpd(digits.arrays('train'),
                                     digits.arrays('test'), 17)
  assert 2.2 < bpd < math.log2(17) - 1.5


# --------------------------------------------------------------------------
# Labelled batches (class-conditional models) and pixel perturbation.


def _labelled_ids_npz(tmp_path, n=100, num_labels=4):
  """Constant 4x4 images whose pixels equal their index; label = id % 4."""
  images = np.repeat(np.arange(n, dtype=np.uint8), 16).reshape(n, 4, 4)
  return _write_npz(tmp_path / 'lids.npz', images=images,
                    labels=np.arange(n) % num_labels)


def _eval_labels(ds, split):
  got = _take(ds.eval_batches(split, 7, with_labels=True), 1000)
  return (np.concatenate([x for x, _ in got]),
          np.concatenate([y for _, y in got]))


@pytest.mark.parametrize('flip', [False, True])
def test_labelled_batches_follow_the_images_and_resume(tmp_path, flip):
  ds = data.load_dataset(data.DataConfig(
      dataset=_labelled_ids_npz(tmp_path), validation_size=0, test_size=20,
      horizontal_flip=flip))
  assert ds.class_labels == (0, 1, 2, 3) and ds.num_classes == 4
  spe = ds.steps_per_epoch(8)
  fresh = _take(ds.train_batches(8, with_labels=True), 2 * spe + 3)
  plain = _take(ds.train_batches(8), 2 * spe + 3)
  for (x, y), p in zip(fresh, plain):
    np.testing.assert_array_equal(x, p)
    assert y.dtype == np.int32
    np.testing.assert_array_equal(y, _ids(x) % 4)
  for k in (1, spe, spe + 2):
    resumed = _take(ds.train_batches(8, start_step=k, with_labels=True),
                    len(fresh) - k)
    for (x, y), (fx, fy) in zip(resumed, fresh[k:]):
      np.testing.assert_array_equal(x, fx)
      np.testing.assert_array_equal(y, fy)
  np.testing.assert_array_equal(ds.class_counts(),
                                np.bincount(ds.labels('train'), minlength=4))


def test_classes_map_to_contiguous_class_indices(tmp_path):
  ds = data.load_dataset(data.DataConfig(
      dataset=_labelled_ids_npz(tmp_path), validation_size=0, test_size=10,
      classes=(3, 1)))
  # Sorted: label 1 -> class 0, label 3 -> class 1.
  assert ds.class_labels == (1, 3) and ds.num_classes == 2
  for x, y in _take(ds.train_batches(5, with_labels=True), 8):
    np.testing.assert_array_equal(y, (_ids(x) % 4 == 3).astype(int))
  x, y = _eval_labels(ds, 'test')
  np.testing.assert_array_equal(y, (_ids(x) % 4 == 3).astype(int))
  np.testing.assert_array_equal(ds.class_indices(np.array([3, 1, 1])),
                                [1, 0, 0])
  digits = data.load_dataset(data.DataConfig(classes=(7, 2)))
  assert digits.class_labels == (2, 7)
  assert digits.model_class_names == ('2', '7')


def test_every_in_memory_source_yields_labels(tmp_path):
  _write_idx_dir(tmp_path / 'idx')
  for cls in ('cat', 'ant'):
    for i in range(4):
      _save(tmp_path / 'folder' / cls / f'{i}.png',
            np.full((5, 5), 10 * i + (cls == 'cat'), np.uint8))
  sources = {
      f'idx:{tmp_path}/idx': (3, None),
      f'folder:{tmp_path}/folder': (2, ('ant', 'cat')),
      _labelled_ids_npz(tmp_path): (4, None),
      'digits': (10, tuple(str(d) for d in range(10))),
  }
  for source, (k, names) in sources.items():
    ds = data.load_dataset(data.DataConfig(dataset=source, validation_size=0,
                                           test_size=0.25))
    assert ds.num_classes == k, source
    if names:
      assert ds.model_class_names == names, source
    x, y = _eval_labels(ds, 'test')
    np.testing.assert_array_equal(x, ds.arrays('test'))
    np.testing.assert_array_equal(y, ds.labels('test'), err_msg=source)
  ds = data.load_dataset(data.DataConfig(dataset=f'folder:{tmp_path}/folder',
                                         validation_size=0, test_size=0))
  x, y = next(iter(ds.train_batches(8, with_labels=True)))
  np.testing.assert_array_equal(y, x.numpy()[:, 0, 0, 0] % 2)  # cat = odd.


def test_labelled_batches_of_unlabelled_data_are_a_one_line_error(id_npz):
  ds = data.load_dataset(data.DataConfig(dataset=id_npz))
  assert ds.num_classes is None
  _raises(lambda: ds.train_batches(8, with_labels=True), 'has no labels',
          '--conditioning=none')
  _raises(lambda: ds.eval_batches('test', 8, with_labels=True),
          'has no labels')
  _raises(ds.class_counts, 'has no labels')


def test_tfds_labels_in_memory_and_streaming_agree(tiny_tfds, monkeypatch):
  name, data_dir = tiny_tfds
  cfg = data.DataConfig(dataset=name, data_dir=data_dir, validation_size=5,
                        classes=(2, 0))
  memory = data.load_dataset(cfg)
  assert memory.class_labels == (0, 2)
  assert memory.model_class_names == ('a', 'c')
  monkeypatch.setattr(tfds_source, 'IN_MEMORY_LIMIT_BYTES', 0)
  stream = data.load_dataset(cfg)
  assert stream.streaming and stream.class_labels == (0, 2)
  np.testing.assert_array_equal(stream.class_counts(), memory.class_counts())
  for split in data.SPLITS:
    mx, my = _eval_labels(memory, split)
    sx, sy = _eval_labels(stream, split)
    np.testing.assert_array_equal(sx, mx)
    np.testing.assert_array_equal(sy, my)
  x, y = next(iter(stream.train_batches(4, start_step=3, with_labels=True)))
  plain = next(iter(stream.train_batches(4, start_step=3)))
  np.testing.assert_array_equal(x, plain)
  train_x, train_y = memory.arrays('train'), memory.class_indices(
      memory.labels('train'))
  for image, label in zip(x.numpy(), y.numpy()):
    match = np.flatnonzero((train_x == image).all(axis=(1, 2, 3)))
    assert len(match) == 1 and train_y[match[0]] == label


def test_perturbation_rate_replaces_pixels_reproducibly(tmp_path):
  source = _write_npz(tmp_path / 'zeros.npz',
                      images=np.zeros((64, 8, 8), np.uint8), labels=np.arange(
                          64) % 2)
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  # Rate 0 is the identity (also of the transform).
  x = tf.constant(np.arange(64, dtype=np.uint8).reshape(1, 8, 8, 1))
  assert transforms.perturb_pixels(x, 0., 256, [1, 2]) is x
  base = data.load_dataset(data.DataConfig(dataset=source, test_size=0,
                                           validation_size=0))
  perturbed = data.load_dataset(data.DataConfig(
      dataset=source, test_size=0, validation_size=0, perturbation_rate=0.3))
  assert not _take(base.train_batches(32), 1)[0].any()
  batches = _take(perturbed.train_batches(32), 20)
  pixels = np.concatenate(batches).astype(int)
  assert pixels.min() >= 0 and pixels.max() < 256
  # A replaced pixel gets a uniform level: 0 with probability 1/256.
  rate = (pixels != 0).mean() / (1 - 1 / 256)
  assert abs(rate - 0.3) < 0.01, rate
  assert len(np.unique(pixels[pixels != 0])) > 200  # Uniform over levels.
  again = _take(perturbed.train_batches(32, start_step=7), 3)
  np.testing.assert_array_equal(np.stack(again), np.stack(batches[7:10]))
  assert not np.array_equal(batches[0], batches[1])  # Keyed by the step.
  # Labels are untouched, evaluation is unperturbed.
  _, y = _take(perturbed.train_batches(32, with_labels=True), 1)[0]
  assert set(y) <= {0, 1}
  assert not np.concatenate(_take(perturbed.eval_batches('train', 32),
                                  10)).any()
  # Low-level data: values stay below L.
  digits = data.load_dataset(data.DataConfig(perturbation_rate=1.))
  got = np.concatenate(_take(digits.train_batches(64), 5))
  assert got.max() == 16 and got.min() == 0
  _raises(lambda: data.DataConfig(perturbation_rate=1.5), 'perturbation_rate')
  # Older config.json files (without the field) still load.
  fields = dataclasses.asdict(data.DataConfig())
  del fields['perturbation_rate']
  assert data.DataConfig(**fields).perturbation_rate == 0.
