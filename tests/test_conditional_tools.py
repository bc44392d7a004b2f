"""A class-conditional training run end to end: config.json, resume, export
signatures with labels (and their in-graph checks), bin/sample --label(s),
bin/evaluate's class-conditional bits/dim and Bayes-classifier accuracy, and
the one-line error for conditioning on unlabelled data.

The run is configs/tiny.flags (4×4 digits) with ``--conditioning=class``
and ``--classes=7,2`` (so class index 0 is the digit 2, index 1 the digit 7).
"""

import json
import os
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

import configs_util
from tfp_flowpp import data as data_lib
from tfp_flowpp import export
from tfp_flowpp import training

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _trainer(workdir, steps):
  return training.Trainer(
      configs_util.tiny_model_config(conditioning='class'),
      configs_util.tiny_data_config(classes=(7, 2)),
      configs_util.tiny_train_config(train_steps=steps, eval_every=5,
                                     num_sample_images=6),
      workdir, stream=open(os.devnull, 'w'))


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('conditional') / 'run')
  trainer = _trainer(workdir, 6)
  record = trainer.run()
  return workdir, trainer, record


def test_config_records_the_classes_and_the_frequencies(run):
  workdir, trainer, record = run
  model = json.load(open(os.path.join(workdir, 'config.json')))['model']
  assert model['conditioning'] == 'class' and model['num_classes'] == 2
  assert model['class_labels'] == [2, 7]
  assert model['class_names'] == ['2', '7']
  counts = trainer.dataset.class_counts()
  restored, _, step = training.restore_for_inference(workdir)
  assert step == 6 and restored.num_classes == 2
  np.testing.assert_allclose(np.exp(restored.log_class_frequencies),
                             counts / counts.sum(), rtol=1e-6)
  assert np.isfinite(record['test_bpd'])
  grid = Image.open(os.path.join(workdir, 'figures', 'samples_latest.png'))
  # One row per class: 2 rows of 3 4x4 samples (square-ish cells upscaled).
  assert grid.size[0] > grid.size[1]


def test_resume_continues_a_conditional_run(run, tmp_path):
  workdir, _, _ = run
  copy = str(tmp_path / 'copy')
  subprocess.run(['cp', '-r', workdir, copy], check=True)
  resumed = _trainer(copy, 8)
  assert resumed.restore_or_initialize() == 6
  np.testing.assert_array_equal(
      resumed.model.class_conditioning.prior_mean.numpy(),
      run[1].model.class_conditioning.prior_mean.numpy())
  assert resumed.run()['step'] == 8
  # Another class set is another architecture (num_classes, labels).
  with pytest.raises(training.WorkdirError, match='class_labels'):
    training.Trainer(
        configs_util.tiny_model_config(conditioning='class'),
        configs_util.tiny_data_config(classes=(7, 3)),
        configs_util.tiny_train_config(), copy)


def test_export_takes_labels_and_checks_them(run, tmp_path):
  workdir, _, _ = run
  model, configs, step = training.restore_for_inference(workdir)
  path = export.export_saved_model(
      model, str(tmp_path / 'export'), metadata={'config': configs,
                                                 'step': step})
  meta = export.read_metadata(path)
  assert meta['num_classes'] == 2
  loaded = tf.saved_model.load(path)
  signatures = loaded.signatures
  images = tf.constant(
      data_lib.load_dataset(configs_util.tiny_data_config()).arrays('test')[:5])
  labels = tf.constant([0, 1, 1, 0, 1], tf.int32)
  for name in ('log_prob', 'importance_weighted_log_prob', 'sample', 'encode',
               'decode'):
    assert 'labels' in signatures[name].structured_input_signature[1], name
  seeded = loaded.importance_weighted_log_prob_seeded(
      images, tf.constant(3), tf.constant([1, 2]), labels)['log_prob']
  expected = model.importance_weighted_log_prob(
      tf.cast(images, tf.int32), 3, seed=[1, 2], labels=labels)
  np.testing.assert_allclose(seeded, expected, rtol=1e-5)
  assert signatures['log_prob'](images=images,
                                labels=labels)['log_prob'].shape == (5,)
  out = signatures['sample'](num_samples=tf.constant(4),
                             temperature=tf.constant(0.7),
                             seed=tf.constant([3, 4]),
                             labels=tf.constant([0, 0, 1, 1]))['images']
  np.testing.assert_array_equal(
      out, model.sample(4, seed=[3, 4], temperature=0.7, labels=[0, 0, 1, 1]))
  latents = signatures['encode'](images=images, labels=labels)['latents']
  np.testing.assert_array_equal(
      signatures['decode'](latents=latents, labels=labels)['images'], images)
  y = tf.cast(images, tf.float32) + 0.5
  np.testing.assert_allclose(loaded.flow_log_prob(y, labels),
                             model.continuous_log_prob(y, labels=labels),
                             rtol=1e-5)
  bad = {
      'class indices in \\[0, 2\\)': [0, 1, 2, 0, 1],
      'one class index per image': [0, 1],
  }
  for message, values in bad.items():
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
      signatures['log_prob'](images=images, labels=tf.constant(values))
  with pytest.raises(tf.errors.InvalidArgumentError, match=r'in \[0, 2\)'):
    signatures['sample'](num_samples=tf.constant(2),
                         temperature=tf.constant(1.), seed=tf.constant([1, 1]),
                         labels=tf.constant([0, -1]))
  with pytest.raises(tf.errors.InvalidArgumentError, match='one class index'):
    signatures['sample'](num_samples=tf.constant(3),
                         temperature=tf.constant(1.), seed=tf.constant([1, 1]),
                         labels=tf.constant([0, 1]))
  with pytest.raises(TypeError):
    signatures['log_prob'](images=images)


def _tool(tool, *args):
  env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL='3')
  return subprocess.run(
      [sys.executable, os.path.join(ROOT, 'bin', tool), *args], env=env,
      capture_output=True, text=True, timeout=600)


@pytest.mark.slow  # Five tool subprocesses (~1 min on a quiet 2-core CPU).
def test_sample_and_evaluate_tools(run, tmp_path):
  workdir, _, _ = run
  out = tmp_path / 'seven.png'
  npy = tmp_path / 'seven.npy'
  result = _tool('sample', f'--workdir={workdir}', '--label=7', '--num=4',
                 f'--out={out}', f'--npy={npy}')
  assert result.returncode == 0, result.stderr[-2000:]
  assert 'of class 7' in result.stdout and np.load(npy).shape == (4, 4, 4, 1)
  rows = tmp_path / 'rows.png'
  result = _tool('sample', f'--workdir={workdir}', '--num=6',
                 f'--out={rows}', f'--npy={npy}')
  assert result.returncode == 0, result.stderr[-2000:]
  assert 'one row per class (2 classes)' in result.stdout
  assert np.load(npy).shape == (6, 4, 4, 1)
  result = _tool('sample', f'--workdir={workdir}', '--labels=7,2,7',
                 '--num=2', f'--out={rows}', f'--npy={npy}')
  assert result.returncode == 0 and np.load(npy).shape == (6, 4, 4, 1)
  result = _tool('sample', f'--workdir={workdir}', '--label=5',
                 f'--out={out}')
  assert result.returncode == 1
  assert "sample: error: unknown class '5'" in result.stderr
  assert '2 (2), 7 (7)' in result.stderr
  result = _tool('evaluate', f'--workdir={workdir}', '--num_samples=2',
                 '--max_images=40')
  assert result.returncode == 0, result.stderr[-2000:]
  assert "class-conditional, true labels" in result.stdout
  assert 'Bayes-classifier accuracy' in result.stdout
  record = json.loads(open(os.path.join(workdir, 'metrics.jsonl'))
                      .read().splitlines()[-1])
  assert 0. <= record['test_accuracy'] <= 1.
  assert record['test_marginal_bpd'] > 0.


def test_evaluate_scores_other_data_on_the_marginal_bound(run, tmp_path):
  """OOD scoring of a conditional model needs no labels: log Σ_y π_y P(x|y)."""
  workdir, _, _ = run
  before = open(os.path.join(workdir, 'metrics.jsonl')).read()
  out = tmp_path / 'threes.csv'
  result = _tool('evaluate', f'--workdir={workdir}', '--dataset=digits',
                 '--image_size=4', '--classes=3', '--max_images=40',
                 '--num_samples=2', '--reference_images=64', f'--output={out}')
  assert result.returncode == 0, result.stderr[-2000:]
  assert 'marginal bound over 2 classes' in result.stdout
  rows = open(out).read().splitlines()
  assert len(rows) == 41 and 'bpd_iw' in rows[0]
  bpd = np.array([float(r.split(',')[rows[0].split(',').index('bpd')])
                  for r in rows[1:]])
  assert np.all(np.isfinite(bpd)) and np.all(bpd > 0)
  # Its own test_bpd (log P(x | y), true labels) is not overwritten.
  assert open(os.path.join(workdir, 'metrics.jsonl')).read() == before


def test_conditioning_on_unlabelled_data_is_a_one_line_error(tmp_path):
  source = tmp_path / 'x.npz'
  np.savez(source, images=np.zeros((80, 4, 4), np.uint8))
  with pytest.raises(data_lib.DataError, match='has no labels') as info:
    training.Trainer(
        configs_util.tiny_model_config(conditioning='class'),
        configs_util.tiny_data_config(dataset=f'npz:{source}', image_size=None),
        configs_util.tiny_train_config(), str(tmp_path / 'run'))
  assert '\n' not in str(info.value)
  assert not os.path.exists(tmp_path / 'run' / 'config.json')
