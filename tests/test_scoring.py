"""Per-image scoring, OOD scores and the tools on them (bin/evaluate, bin/score).

The model is the real tiny v0.1 run in tests/data/v0_1_tiny_workdir (4x4
digits, 17 levels), restored in seconds; the tools run as subprocesses on a
copy of it.
"""

import csv
import io
import json
import math
import os
import re
import shutil
import subprocess
import sys
import types

import numpy as np
from PIL import Image
import pytest
from scipy import stats
import tensorflow as tf

import _scoring
from tfp_flowpp import compression
from tfp_flowpp import data as data_lib
from tfp_flowpp import scoring
from tfp_flowpp import training
from tfp_flowpp.scoring import complexity

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOLDEN = os.path.join(ROOT, 'tests', 'data', 'v0_1_tiny_workdir')


def run(tool, *args, timeout=300):
  env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL='3')
  return subprocess.run(
      [sys.executable, os.path.join(ROOT, 'bin', tool), *args], env=env,
      capture_output=True, text=True, timeout=timeout, check=False)


def error_lines(result, tool):
  return [l for l in result.stderr.splitlines() if l.startswith(f'{tool}:')]


@pytest.fixture(scope='module')
def workdir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp('scoring') / 'run')
  shutil.copytree(GOLDEN, path)
  return path


@pytest.fixture(scope='module')
def restored(workdir):
  model, configs, _ = training.restore_for_inference(workdir)
  return model, configs


@pytest.fixture(scope='module')
def digits4(restored):
  return data_lib.load_dataset(data_lib.DataConfig(**restored[1]['data']))


# Per-image bits/dim ---------------------------------------------------------------


def _padded(images, batch_size):
  padding = np.repeat(images[-1:], batch_size - len(images), axis=0)
  return np.concatenate([images, padding])


def test_per_image_bpd_is_the_models_bound_of_each_image(restored, digits4):
  model, _ = restored
  images = digits4.arrays('test')[:6]
  scorer = scoring.PerImageBpd(model, batch_size=4, seed=3)
  for k in (1, 2):

    @tf.function
    def bpd(x, seed, k=k):
      bound = (model.log_prob(x, seed=seed) if k == 1 else
               model.importance_weighted_log_prob(x, k, seed=seed))
      return model.nats_to_bits_per_dim(bound)

    expected = []
    for i in range(2):
      batch = images[4 * i:4 * i + 4]
      expected.append(bpd(tf.constant(_padded(batch, 4)),
                          tf.constant([3, i], tf.int32)).numpy()[:len(batch)])
    np.testing.assert_allclose(scorer(images, num_samples=k),
                               np.concatenate(expected), rtol=1e-5)


def test_per_image_bpd_does_not_depend_on_batching_or_other_images(
    restored, digits4):
  model, _ = restored
  images = digits4.arrays('test')[:11]
  scorer = scoring.PerImageBpd(model, batch_size=4, seed=0)
  whole = scorer(images)
  batches = [images[:3], images[3:8], images[8:9], images[9:]]
  np.testing.assert_array_equal(scorer(iter(batches)), whole)
  np.testing.assert_array_equal(
      scorer(tf.data.Dataset.from_tensor_slices(images).batch(5)), whole)
  # Padding (or any other image in the batch) leaves an image's bound alone.
  with_other = np.concatenate([images[:3], images[10:11]])
  np.testing.assert_allclose(
      scorer.batch(images[:3], 0), scorer.batch(with_other, 0)[:3], rtol=1e-6)
  assert len(set(np.round(whole, 6))) == len(whole)


def test_per_image_bpd_rejects_images_the_model_cannot_score(restored):
  model, _ = restored
  scorer = scoring.PerImageBpd(model, batch_size=4)
  for images, message in (
      (np.zeros((2, 8, 8, 1), np.uint8), 'are 8x8x1 but the model takes'),
      (np.full((2, 4, 4, 1), 17, np.uint8), 'has 17 levels'),
      (np.zeros((2, 4, 4, 1), np.float32), 'dtype float32'),
      (np.zeros((0, 4, 4, 1), np.uint8), 'no images')):
    with pytest.raises(ValueError, match=message):
      scorer(images)


# Scores ----------------------------------------------------------------------------


def test_typicality_test_is_calibrated_and_flags_too_likely_batches():
  rng = np.random.default_rng(0)
  train = rng.normal(3., 0.3, 20000)
  validation = rng.normal(3., 0.3, 2000)
  test = scoring.TypicalityTest.fit(train, validation, num_bootstrap=2000)
  assert test.entropy_bpd == pytest.approx(train.mean())
  np.testing.assert_allclose(test.per_image_scores([2.5, 3.5]),
                             np.abs(np.array([2.5, 3.5]) - train.mean()))
  # Under the null, p-values are uniform: ~5% of batches have p <= 0.05.
  p_values = [test.p_value(rng.normal(3., 0.3, 20)) for _ in range(400)]
  assert 0.02 <= np.mean(np.array(p_values) <= 0.05) <= 0.09
  # Both too unlikely and *too likely* batches are atypical (the point of
  # the test: raw likelihood would call the second in-distribution).
  for shift in (0.5, -0.5):
    result = test.test(rng.normal(3. + shift, 0.3, 20), alpha=0.01)
    assert result.out_of_distribution and result.statistic > result.threshold
    assert result.p_value == pytest.approx(1 / 2001)
  assert not test.test(validation[:20]).out_of_distribution
  # The threshold is the bootstrap quantile; larger batches are tighter.
  null = test.bootstrap_statistics(20)
  assert test.threshold(20, 0.05) == pytest.approx(np.quantile(null, 0.95))
  assert test.threshold(100) < test.threshold(20) < test.threshold(1)
  batches = test.batch_statistics(validation, 10, seed=1)
  assert batches.shape == (200,)
  with pytest.raises(ValueError, match='no batch'):
    test.batch_statistics(validation[:5], 10)


@pytest.mark.parametrize('codec', scoring.CODECS)
def test_code_lengths_are_lengths_of_real_lossless_files(codec):
  rng = np.random.default_rng(0)
  ramps = np.stack([np.add.outer(np.arange(16), np.arange(16)) * s
                    for s in range(1, 6)])[..., None]
  gray = np.concatenate([ramps, rng.integers(0, 256, (3, 16, 16, 1)),
                         np.full((2, 16, 16, 1), 7)]).astype(np.uint8)
  rgb = rng.integers(0, 256, (3, 5, 6, 3)).astype(np.uint8)
  for images in (gray, rgb):
    bits = scoring.code_length_bits(images, codec)
    for image, length in zip(images, bits):
      payload = complexity.encode(image, codec)
      assert length == 8 * len(payload)
      with Image.open(io.BytesIO(payload)) as decoded:
        array = np.asarray(decoded.convert('L' if image.shape[-1] == 1 else
                                           'RGB'))
      np.testing.assert_array_equal(array.reshape(image.shape), image)
  bits = scoring.code_length_bits(gray, codec)
  structured = np.concatenate([bits[:5], bits[8:]])
  assert structured.max() < bits[5:8].min()
  np.testing.assert_allclose(
      scoring.complexity_corrected_bpd(np.ones(10), bits, 256), 1 - bits / 256)
  with pytest.raises(ValueError, match='0, 255'):
    scoring.code_length_bits(np.full((1, 2, 2, 1), 256), codec)


def test_likelihood_ratio_score_and_background_check():
  np.testing.assert_allclose(
      scoring.likelihood_ratio_score([3., 2.], [2.5, 2.5]), [0.5, -0.5])
  model = types.SimpleNamespace(image_shape=(4, 4, 1), num_levels=17)
  scoring.check_background(model, model)
  for other, message in (
      (types.SimpleNamespace(image_shape=(8, 8, 1), num_levels=17), '8x8x1'),
      (types.SimpleNamespace(image_shape=(4, 4, 1), num_levels=256), '256')):
    with pytest.raises(ValueError, match=message):
      scoring.check_background(model, other)


def test_detection_metrics_sanity():
  rng = np.random.default_rng(0)
  same = scoring.detection_metrics(rng.normal(size=4000),
                                   rng.normal(size=4000))
  assert same['auroc'] == pytest.approx(0.5, abs=0.03)
  assert same['aupr'] == pytest.approx(0.5, abs=0.03)
  values = rng.normal(size=300)
  assert scoring.detection_metrics(values, values)['auroc'] == pytest.approx(0.5)
  apart = scoring.detection_metrics(rng.normal(size=500),
                                    rng.normal(10., size=200))
  assert apart['auroc'] == 1. and apart['aupr'] == 1.
  assert apart['num_in_distribution'] == 500 and apart['num_candidates'] == 200
  # Candidates are the positives: a score they are low on gives AUROC 0.
  assert scoring.detection_metrics([5., 6.], [1., 2.])['auroc'] == 0.
  # AUROC is the Mann-Whitney U statistic / (n_in n_out), ties included.
  inside, outside = rng.integers(0, 5, 50), rng.integers(1, 6, 40)
  u = stats.mannwhitneyu(outside, inside).statistic
  assert scoring.detection_metrics(inside, outside)['auroc'] == pytest.approx(
      u / (50 * 40))
  with pytest.raises(ValueError, match='non-finite'):
    scoring.detection_metrics([1., np.nan], [2.])
  with pytest.raises(ValueError, match='empty'):
    scoring.detection_metrics([], [2.])


def test_image_scorer_columns(restored, digits4, workdir):
  model, _ = restored
  config = scoring.ScoringConfig(num_samples=2, batch_size=64, seed=1)
  scorer = scoring.ImageScorer(model, config, background=model)
  test, reference, held = scorer.fit_typicality(
      digits4.arrays('train')[:100], digits4.arrays('validation'))
  assert test.entropy_bpd == pytest.approx(reference.mean())
  assert len(held) == digits4.num_examples['validation']
  images = digits4.arrays('test')[:70]
  columns = scorer.score(images, typicality=test)
  assert list(columns) == [
      'bpd', 'bpd_iw', 'typicality', 'png_bits', 'complexity_png',
      'webp_bits', 'complexity_webp', 'background_bpd', 'likelihood_ratio']
  assert scorer.score_names(test) == ('bpd', 'typicality', 'complexity_png',
                                      'complexity_webp', 'likelihood_ratio')
  per_image = scoring.PerImageBpd(model, 64, 1)
  np.testing.assert_allclose(columns['bpd'], per_image(images), rtol=1e-6)
  np.testing.assert_allclose(columns['bpd_iw'], per_image(images, 2),
                             rtol=1e-6)
  np.testing.assert_allclose(columns['typicality'],
                             np.abs(columns['bpd'] - test.entropy_bpd))
  np.testing.assert_allclose(
      columns['complexity_webp'], columns['bpd'] - columns['webp_bits'] / 16)
  # The same model as background, with the same noise: a ratio of exactly 1.
  np.testing.assert_array_equal(columns['likelihood_ratio'], 0.)
  # Identical in-distribution and candidate sets give AUROC 0.5 exactly.
  again = scorer.score(images, typicality=test)
  for name in scorer.score_names(test):
    assert scoring.detection_metrics(columns[name],
                                     again[name])['auroc'] == pytest.approx(0.5), name
  # Our own code length under a second model (here the run's own, coded
  # alone per image): the column is that codec's per-image lengths.
  codec = complexity.load_codec(workdir, model)
  assert codec.fingerprint == compression.Codec(
      model, training.Workdir(workdir).model_config()).fingerprint
  coded = scoring.ImageScorer(
      model, scoring.ScoringConfig(num_samples=1, batch_size=32, seed=1,
                                   codecs=('png',)), complexity_codec=codec)
  assert coded.score_names() == ('bpd', 'complexity_png', 'complexity_flowpp')
  own = coded.score(images[:40])
  assert list(own) == ['bpd', 'png_bits', 'complexity_png', 'flowpp_bits',
                       'complexity_flowpp']
  np.testing.assert_array_equal(
      own['flowpp_bits'],
      np.concatenate([codec.code_lengths(images[:32], seed=(1, 0)),
                      codec.code_lengths(images[32:40], seed=(1, 1))]))
  np.testing.assert_allclose(own['complexity_flowpp'],
                             own['bpd'] - own['flowpp_bits'] / 16)
  # Under the model itself, S is the coding overhead only: ≈ 0 on average.
  assert abs(own['complexity_flowpp'].mean()) < 0.3
  wrong = types.SimpleNamespace(image_shape=(8, 8, 1), num_levels=17)
  with pytest.raises(ValueError, match='complexity model takes 8x8x1'):
    scoring.ImageScorer(model, complexity_codec=wrong)
  with pytest.raises(ValueError, match=f'^{re.escape(workdir)}: the '
                     'complexity model takes 4x4x1 images but the model '
                     'takes 8x8x1'):
    complexity.load_codec(workdir, wrong)  # Run for 4x4 images, 8x8 model.
  wrong = types.SimpleNamespace(image_shape=(4, 4, 1), num_levels=256)
  with pytest.raises(ValueError, match='complexity model has 256 levels'):
    scoring.ImageScorer(model, complexity_codec=wrong)
  iw = scoring.ImageScorer(model, scoring.ScoringConfig(
      num_samples=2, score_bound='importance_weighted', codecs=()))
  assert iw.score_names() == ('bpd_iw',)
  with pytest.raises(ValueError, match='num_samples > 1'):
    scoring.ScoringConfig(num_samples=1, score_bound='importance_weighted')
  with pytest.raises(ValueError, match='codecs'):
    scoring.ScoringConfig(codecs=('png', 'jpeg'))


def test_an_interrupted_pass_resumes_with_the_same_numbers(restored,
                                                           digits4, tmp_path):
  model, _ = restored
  config = scoring.ScoringConfig(num_samples=2, batch_size=16, seed=3,
                                 codecs=('png',))
  scorer = scoring.ImageScorer(model, config, background=model)
  images = digits4.arrays('test')[:50]  # Batches of 16, 16, 16 and 2.
  whole = scorer.score(images)
  path = str(tmp_path / 'sub' / 'pass.partial.npz')

  def stop_after(images_done):
    def callback(done):
      if done >= images_done:
        raise KeyboardInterrupt
    return callback

  with pytest.raises(KeyboardInterrupt):
    scorer.score(images, callback=stop_after(32), progress_file=path)
  kept = scoring.PartialScores.open(path, scorer.key)
  assert (kept.num_batches, kept.num_images) == (2, 32)
  assert os.listdir(tmp_path / 'sub') == ['pass.partial.npz']  # No temp.
  # A third batch, then the rest: each resumed pass recomputes nothing it
  # has (a changed model would show) and gives exactly the whole pass.
  with pytest.raises(KeyboardInterrupt):
    scorer.score(images, callback=stop_after(48), progress_file=path)
  assert scoring.PartialScores.open(path, scorer.key).num_batches == 3
  computed = []
  original = scorer._batch_columns
  scorer._batch_columns = lambda b, i: computed.append(i) or original(b, i)
  resumed = scorer.score(images, progress_file=path)
  assert computed == [3]
  assert list(resumed) == list(whole)
  for name in whole:
    np.testing.assert_array_equal(resumed[name], whole[name], err_msg=name)
  assert not os.path.exists(path)  # Deleted when complete.

  # Only the scorer and the images that wrote a file may resume from it.
  with pytest.raises(KeyboardInterrupt):
    scorer.score(images, callback=stop_after(32), progress_file=path)
  other = scoring.ImageScorer(model, scoring.ScoringConfig(
      num_samples=2, batch_size=16, seed=4, codecs=('png',)),
                              background=model)
  with pytest.raises(ValueError, match='^' + re.escape(
      f'{path} holds partial scores of another model or scoring '
      'configuration')):
    other.score(images, progress_file=path)
  with pytest.raises(ValueError, match=re.escape(
      f'{path} holds scores of other images at batch 0 (images 0..15)')):
    scorer.score(images[::-1], progress_file=path)
  with pytest.raises(ValueError, match='holds 32 images\' scores but the '
                     'source has only 16'):
    scorer.score(images[:16], progress_file=path)
  assert scoring.PartialScores.open(path, scorer.key).num_images == 32
  with open(path, 'wb') as f:
    f.write(b'not an npz')
  with pytest.raises(ValueError, match='is not a partial-scores file'):
    scorer.score(images, progress_file=path)

  # The typicality reference: two passes, kept until both are complete.
  reference, held = digits4.arrays('train')[:40], images[:20]
  expected = scorer.fit_typicality(reference, held)
  paths = (str(tmp_path / 'reference.npz'), str(tmp_path / 'bootstrap.npz'))
  with pytest.raises(KeyboardInterrupt):  # Reference done, bootstrap 1/2.
    scorer.fit_typicality(reference, held, callback=stop_after(56),
                          progress_files=paths)
  assert [scoring.PartialScores.open(p, scorer.key).num_images
          for p in paths] == [40, 16]
  calls = []
  model_bpd = scorer._model_bpd.batch
  scorer._model_bpd.batch = lambda b, i, k: calls.append(
      (len(b), i)) or model_bpd(b, i, k)
  resumed = scorer.fit_typicality(reference, held, progress_files=paths)
  assert calls == [(4, 1)]  # Only the bootstrap's second batch.
  assert resumed[0].entropy_bpd == expected[0].entropy_bpd
  for a, b in zip(resumed[1:], expected[1:]):
    np.testing.assert_array_equal(a, b)
  assert not any(os.path.exists(p) for p in paths)


@pytest.mark.parametrize('extension', ['.csv', '.npz'])
def test_score_files_round_trip(tmp_path, extension):
  path = str(tmp_path / f'scores{extension}')
  columns = {
      'index': np.arange(5),
      'label': np.array([3, 0, 9, 1, 1]),
      'path': np.array(['a.png', 'b, "c".png', 'ü/d.png', '', '5']),
      'bpd': np.array([1 / 3, 1e-300, -0., np.nan, np.inf]),
      'png_bits': np.array([680., 688., 1e17 + 8, 0., 1.5]),
  }
  scoring.write_scores(path, columns)
  back = scoring.read_scores(path)
  assert list(back) == list(columns)
  for name, values in columns.items():
    assert back[name].dtype.kind == values.dtype.kind, name
    np.testing.assert_array_equal(back[name], values)
  assert np.signbit(back['bpd'][2])
  before = open(path, 'rb').read()
  with pytest.raises(ValueError, match='one length'):
    scoring.write_scores(path, {'index': [1, 2], 'bpd': [1.]})
  assert open(path, 'rb').read() == before
  with pytest.raises(ValueError, match='.csv or .npz'):
    scoring.write_scores(str(tmp_path / 'scores.json'), columns)


# bin/ plumbing -------------------------------------------------------------------


def test_folder_sources_carry_paths_and_labels_into_the_table(tmp_path,
                                                              restored):
  _, configs = restored
  files = []
  for i in range(5):
    folder = tmp_path / 'images' / ('cats' if i % 2 else 'dogs')
    folder.mkdir(parents=True, exist_ok=True)
    files.append(folder / f'{i}.png')
    Image.fromarray(np.full((4, 4), 40 * i, np.uint8)).save(files[-1])
  source = _scoring.load_source(configs, _scoring.SourceOptions(
      dataset=f'folder:{tmp_path}/images'))
  assert source.split == 'all' and source.count == 5 and not source.own
  order = np.argsort([str(f) for f in files])
  np.testing.assert_array_equal(source.paths,
                                [str(files[i]) for i in order])
  np.testing.assert_array_equal(source.labels, [int(i % 2 == 0) for i in order])
  np.testing.assert_array_equal(source.images[:, 0, 0, 0], 40 * order)
  path = str(tmp_path / 'scores.csv')
  scoring.write_scores(path, _scoring.output_columns(
      source, {'bpd': np.linspace(1., 2., 5)}))
  back = scoring.read_scores(path)
  np.testing.assert_array_equal(back['path'], source.paths)
  np.testing.assert_array_equal(back['index'], np.arange(5))
  dogs = _scoring.load_source(configs, _scoring.SourceOptions(
      dataset=f'folder:{tmp_path}/images', classes=(1,)))
  assert [os.path.relpath(p, tmp_path) for p in dogs.paths] == [
      'images/dogs/0.png', 'images/dogs/2.png', 'images/dogs/4.png']
  np.testing.assert_array_equal(dogs.images[:, 0, 0, 0], [0, 80, 160])


@pytest.mark.parametrize('shape, levels, prefix, num_bits, message', [
    ((8, 8, 1), 17, '', False, 'are 8x8x1 but the model is 4x4x1: pass '
     '--image_size=4.'),
    ((8, 8, 1), 17, 'candidates_', False, 'pass --candidates_image_size=4'),
    ((4, 4, 3), 17, '', False, 'no flag converts 3 to 1 channels'),
    ((4, 4, 1), 256, '', False, 'no flag maps 256 levels to 17'),
])
def test_mismatch_errors_name_the_fix(shape, levels, prefix, num_bits,
                                      message):
  model = types.SimpleNamespace(image_shape=(4, 4, 1), num_levels=17)
  source = _scoring.Source(name='x', split='all', images=None, count=1,
                           image_shape=shape, num_levels=levels)
  with pytest.raises(ValueError, match=message) as info:
    _scoring.check_matches(source, model, prefix, num_bits)
  assert '\n' not in str(info.value)


def test_level_mismatch_errors_suggest_num_bits():
  source = _scoring.Source(name='x', split='all', images=None, count=1,
                           image_shape=(4, 4, 1), num_levels=256)
  five_bit = types.SimpleNamespace(image_shape=(4, 4, 1), num_levels=32)
  with pytest.raises(ValueError, match='256 levels but the model has 32: '
                     'pass --num_bits=5'):
    _scoring.check_matches(source, five_bit)
  with pytest.raises(ValueError, match='pass --candidates_num_bits=5'):
    _scoring.check_matches(source, five_bit, 'candidates_')
  source.num_levels = 32
  eight_bit = types.SimpleNamespace(image_shape=(4, 4, 1), num_levels=256)
  with pytest.raises(ValueError, match='drop --num_bits'):
    _scoring.check_matches(source, eight_bit, '', True)


# The tools ----------------------------------------------------------------------


def test_evaluate_another_dataset_matches_the_library(tmp_path, workdir,
                                                      restored, digits4):
  model, _ = restored
  rng = np.random.default_rng(1)
  images = np.concatenate([digits4.arrays('test')[:30],
                           rng.integers(0, 17, (10, 4, 4, 1))]).astype(
                               np.uint8)
  labels = np.arange(40) % 3
  npz = str(tmp_path / 'mine.npz')
  np.savez(npz, images=images, labels=labels, num_levels=np.int64(17))
  out = str(tmp_path / 'scores.csv')
  metrics_before = open(os.path.join(workdir, 'metrics.jsonl')).read()
  args = ('evaluate', f'--workdir={workdir}', f'--dataset=npz:{npz}',
          f'--output={out}', '--num_samples=2', '--batch_size=8',
          '--reference_images=100', f'--background_workdir={workdir}',
          f'--complexity_workdir={workdir}')
  scorer = scoring.ImageScorer(
      model, scoring.ScoringConfig(num_samples=2, batch_size=8),
      background=model, complexity_codec=compression.Codec(
          model, training.Workdir(workdir).model_config()))
  test, _ = _scoring.fit_typicality(scorer, restored[1], 100)
  expected = scorer.score(images, typicality=test)
  # An interrupted pass kept two batches (their bpd marked +100): the tool
  # finds them under the same scorer key and source and scores the rest.
  source = _scoring.load_source(restored[1], _scoring.SourceOptions(
      dataset=f'npz:{npz}'), 0, 8)
  path = _scoring.progress_file(workdir, scorer, 'npz:mine-all',
                                source.identity)
  kept = scoring.PartialScores.open(path, scorer.key)
  for index in range(2):
    batch = images[8 * index:8 * index + 8]
    values = scorer._batch_columns(batch, index)
    kept.append(batch, dict(values, bpd=values['bpd'] + 100.))
  result = run(*args)
  assert result.returncode == 0, result.stderr[-3000:]
  assert (f'Resuming an interrupted pass: 16 of 40 images already scored '
          f'({path})') in result.stdout
  assert not os.path.exists(os.path.dirname(path))  # Deleted when done.
  for text in ('npz:mine all (40 images', 'single-sample bound',
               'importance-weighted (k=2', '50%', 'complexity_png',
               'complexity_flowpp', 'complexity-model code lengths',
               'Typicality test of all 40 images', 'img/s',
               f'Wrote 40 rows to {out}'):
    assert text in result.stdout, text
  table = scoring.read_scores(out)
  assert list(table) == ['index', 'label'] + list(expected)
  np.testing.assert_array_equal(table['index'], np.arange(40))
  np.testing.assert_array_equal(table['label'], labels)
  np.testing.assert_allclose(table['bpd'][:16], expected['bpd'][:16] + 100.,
                             rtol=1e-6)
  for name, values in expected.items():
    rows = slice(None) if name in ('bpd_iw', 'png_bits', 'webp_bits',
                                   'flowpp_bits', 'background_bpd') else (
                                       slice(16, None))
    np.testing.assert_allclose(table[name][rows], values[rows], rtol=1e-6,
                               atol=1e-9, err_msg=name)
  assert expected['bpd'][30:].min() > expected['bpd'][:30].max()
  # Foreign data is not the run's test bpd: metrics.jsonl is left alone.
  assert open(os.path.join(workdir, 'metrics.jsonl')).read() == metrics_before


def test_evaluate_mismatch_is_a_one_line_error_and_writes_nothing(tmp_path,
                                                                  workdir):
  out = str(tmp_path / 'scores.npz')
  result = run('evaluate', f'--workdir={workdir}', '--dataset=digits',
               f'--output={out}')
  assert result.returncode == 1
  assert error_lines(result, 'evaluate') == [
      'evaluate: error: digits all images are 8x8x1 but the model is 4x4x1: '
      'pass --image_size=4.'], result.stderr[-2000:]
  assert not os.path.exists(out)


def test_score_reports_auroc_table_and_figure(tmp_path, workdir):
  rng = np.random.default_rng(2)
  npz = str(tmp_path / 'noise.npz')
  np.savez(npz, images=rng.integers(0, 17, (40, 4, 4, 1)).astype(np.uint8),
           num_levels=np.int64(17))
  table, figure = str(tmp_path / 'table.csv'), str(tmp_path / 'hist.png')
  result = run('score', f'--workdir={workdir}', f'--candidates=npz:{npz}',
               '--max_images=80', '--reference_images=200',
               '--typicality_batch_sizes=1,4', f'--table={table}',
               f'--figure={figure}')
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'candidates: npz:noise all' in result.stdout
  with open(table) as f:
    rows = {r['score']: r for r in csv.DictReader(f)}
  assert list(rows) == ['bpd', 'typicality (M=1)', 'typicality (M=4)',
                        'complexity_png', 'complexity_webp']
  assert rows['typicality (M=4)']['n in / candidates'] == '20 / 10'
  assert float(rows['bpd']['AUROC']) > 0.95
  for row in rows.values():
    assert 0 <= float(row['AUROC']) <= 1 and 0 <= float(row['AUPR']) <= 1
  Image.open(figure).verify()


@pytest.mark.slow
def test_ood_bench_quick(tmp_path):
  doc = tmp_path / 'benchmarks.md'
  result = subprocess.run(
      [sys.executable, os.path.join(ROOT, 'bench', 'ood.py'), '--quick',
       f'--output_doc={doc}'], capture_output=True, text=True, timeout=900,
      cwd=ROOT, check=False)
  assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
  text = doc.read_text()
  assert '<!-- BEGIN ood -->' in text and '### Targets' in text
  for name in ('test images inverted', 'uniform noise', 'constant images',
               'Fashion-MNIST test, 17 levels, downscaled to 4×4'):
    assert name in text, name
  assert (tmp_path / 'figures' / 'ood_results.json').exists()
  assert (tmp_path / 'figures' / 'ood_digits.png').stat().st_size > 0
  # --quick codes with the scored model itself as the generic model: the
  # S (flowpp) column and the code lengths are filled in.
  assert '| S (flowpp) |' in text and 'flowpp L/D' in text
  results = json.loads((tmp_path / 'figures' / 'ood_results.json').read_text())
  digits = results['digits']
  # Its own code: within coding overhead and bound noise of its own bound.
  flowpp, bound = digits['test_mean_flowpp_bpd'], digits['test_mean_bpd']
  assert abs(flowpp - bound) < 0.3 and flowpp < math.log2(17), (flowpp, bound)
  for s in digits['sets']:
    assert 0 <= s['metrics']['complexity_flowpp']['auroc'] <= 1, s['name']
  # --quick's background is the scored model itself: the background column
  # equals the bound up to dequantization noise, so the likelihood ratio's
  # sign is visible next to it.
  assert '| mean bpd | background bpd | PNG bpd |' in text
  assert abs(digits['test_mean_background_bpd'] - bound) < 0.3
  for s in digits['sets']:
    assert abs(s['mean_background_bpd'] - s['mean_bpd']) < 0.1 * abs(
        s['mean_bpd']) + 0.3, s['name']


def test_ood_bench_writes_generic_patches(tmp_path):
  out = tmp_path / 'patches.npz'
  result = subprocess.run(
      [sys.executable, os.path.join(ROOT, 'bench', 'ood.py'),
       '--write_patches', '--image_size=6', '--num_levels=17', '--count=300',
       f'--out={out}'], capture_output=True, text=True, timeout=300,
      cwd=ROOT, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  dataset = data_lib.load_dataset(data_lib.DataConfig(dataset=f'npz:{out}'))
  assert dataset.image_shape == (6, 6, 1) and dataset.num_levels == 17
  assert dataset.num_examples['test'] == 30
  images = dataset.arrays('train')
  assert images.max() <= 16 and len(np.unique(images)) > 10
  # Photo patches: neighbouring pixels are close, unlike noise.
  step = np.abs(np.diff(images.astype(int), axis=2)).mean()
  assert step < 2., step


def test_ood_bench_writes_perturbed_training_data(tmp_path):
  out = tmp_path / 'perturbed.npz'
  result = subprocess.run(
      [sys.executable, os.path.join(ROOT, 'bench', 'ood.py'),
       f'--write_perturbed={GOLDEN}', f'--out={out}', '--copies=2',
       '--mutation_rate=0.3'], capture_output=True, text=True, timeout=300,
      cwd=ROOT, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  dataset = data_lib.load_dataset(
      data_lib.DataConfig(**training.Workdir(GOLDEN).read_configs()['data']))
  train = dataset.arrays('train')
  with np.load(out) as f:
    images, copies = f['images'], int(f['copies'])
    assert float(f['mutation_rate']) == 0.3
  assert copies == 2 and images.dtype == np.uint8
  assert images.shape == (2 * len(train),) + train.shape[1:]
  first, second = images[:len(train)], images[len(train):]
  assert images.max() < dataset.num_levels
  # Each pixel is redrawn with probability 0.3 (and then keeps its value with
  # probability 1/L), independently in each copy.
  expected = 0.3 * (1 - 1 / dataset.num_levels)
  for copy in (first, second):
    assert abs(np.mean(copy != train) - expected) < 0.03
  assert np.mean(first != second) > 0.3
  # A data set the trainer reads (the file is complete, not half-written).
  assert data_lib.load_dataset(data_lib.DataConfig(
      dataset=f'npz:{out}')).num_examples['train'] > 0


def test_a_resumed_pass_estimates_its_eta_from_this_session(monkeypatch,
                                                             capsys):
  """6,000 of 10,000 images were scored before a restart; this session scores
  1,000 in 100 s, so 3,000 remain at 10 img/s: eta 5:00 (counting the resumed
  images as done now gave 0:42)."""
  clock = iter([0., 0., 100., 100., 100.])
  monkeypatch.setattr(_scoring.time, 'time', lambda: next(clock))

  def fn(callback):
    callback(7000)
    return 'done'

  result, _ = _scoring.with_progress(fn, 10000, initial=6000)
  assert result == 'done'
  line = capsys.readouterr().out.strip()
  assert 'images 7000/10000' in line and ' 10 img/s' in line, line
  assert line.endswith('eta 5:00'), line
