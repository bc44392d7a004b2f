"""Workdirs written by earlier versions keep working.

`tests/data/v0_1_tiny_workdir` is a real run of ``bin/train
--flagfile=configs/tiny.flags`` written by tfp_flowpp 0.1.0 (commit 8bbd136):
its config.json, metrics and last checkpoint, plus ``expected.json`` with
what that version computed from it (single-sample and importance-weighted
bounds with fixed seeds, latents, seeded samples). Refactors that rename a
tracked attribute, change the variable layout, add config fields without
defaults or change the numerics fail here.
"""

import json
import os
import shutil

import numpy as np
import tensorflow as tf

from tfp_flowpp import training

GOLDEN = os.path.join(os.path.dirname(__file__), 'data', 'v0_1_tiny_workdir')


def _expected():
  with open(os.path.join(GOLDEN, 'expected.json')) as f:
    return json.load(f)


def _copy(tmp_path):
  workdir = tmp_path / 'v0_1'
  shutil.copytree(GOLDEN, workdir)
  return str(workdir)


def test_v0_1_workdir_restores_with_the_same_numbers(tmp_path):
  expected = _expected()
  model, _, step = training.restore_for_inference(_copy(tmp_path))
  assert step == expected['step']
  x = tf.constant(expected['test_images'], tf.int32)
  np.testing.assert_allclose(
      model.log_prob(x, seed=tf.constant(expected['log_prob_seed'])).numpy(),
      expected['log_prob'], rtol=1e-4)
  np.testing.assert_allclose(
      model.importance_weighted_log_prob(
          x, expected['iw_k'], seed=tf.constant(expected['iw_seed'])).numpy(),
      expected['iw_log_prob'], rtol=1e-4)
  np.testing.assert_allclose(model.encode(x).numpy(), expected['latents'],
                             rtol=1e-4, atol=1e-4)
  samples = model.sample(4, seed=tf.constant(expected['sample_seed'])).numpy()
  # Quantisation may flip a pixel sitting on a level boundary on another CPU.
  assert np.mean(samples != np.array(expected['samples'])) <= 0.02


def test_v0_1_workdir_resumes_training(tmp_path):
  from tfp_flowpp import config as config_lib  # pylint: disable=g-import-not-at-top
  from tfp_flowpp import data as data_lib  # pylint: disable=g-import-not-at-top
  from tfp_flowpp.training import config as train_config_lib  # pylint: disable=g-import-not-at-top
  workdir = _copy(tmp_path)
  with open(os.path.join(workdir, 'config.json')) as f:
    stored = json.load(f)
  known = lambda cls, values: {
      k: v for k, v in values.items() if k in cls.__dataclass_fields__}
  model_config = config_lib.ModelConfig.from_json(json.dumps(stored['model']))
  data_config = data_lib.DataConfig(
      **known(data_lib.DataConfig, stored['data']))
  train_config = train_config_lib.TrainConfig(**dict(
      known(train_config_lib.TrainConfig, stored['train']), train_steps=22,
      num_sample_images=0))
  record = training.Trainer(model_config, data_config, train_config,
                            workdir).run()
  assert record['step'] == 22 and np.isfinite(record['test_bpd'])
  # Its checkpoint has no clock: training time goes on from the last record.
  logged = _expected_last_record()
  assert record['cpu_seconds'] > logged['cpu_seconds']
  assert record['elapsed_sec'] > logged['elapsed_sec']


def _expected_last_record():
  with open(os.path.join(GOLDEN, 'metrics.jsonl')) as f:
    return json.loads(f.read().splitlines()[-1])


def test_model_config_reads_older_and_rejects_newer_files():
  from tfp_flowpp import config as config_lib  # pylint: disable=g-import-not-at-top
  with open(os.path.join(GOLDEN, 'config.json')) as f:
    stored = json.load(f)['model']
  current = config_lib.ModelConfig.from_json(json.dumps(stored))
  older = dict(stored)
  del older['final_scale']  # As if written before the field existed.
  assert config_lib.ModelConfig.from_json(json.dumps(older)) == current
  newer = dict(stored, a_future_field=1)
  try:
    config_lib.ModelConfig.from_json(json.dumps(newer))
  except ValueError as e:
    assert 'a_future_field' in str(e) and 'newer' in str(e)
    assert '\n' not in str(e)
  else:
    raise AssertionError('a field from a newer version was accepted')
