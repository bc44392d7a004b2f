"""The bin/ tools, run as real subprocesses on the tiny config."""

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest

import flowpp_flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, 'configs', 'tiny.flags')


def run(tool, *args, timeout=300):
  env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL='3')
  env.pop('TF_CONFIG', None)
  return subprocess.run(
      [sys.executable, os.path.join(ROOT, 'bin', tool), *args],
      env=env,
      capture_output=True,
      text=True,
      timeout=timeout)


def error_lines(result):
  """stderr lines that are ours (TF's C++ start-up chatter filtered out)."""
  return [
      l for l in result.stderr.splitlines()
      if l.startswith(('train:', 'evaluate:', 'sample:', 'interpolate:',
                       'export:'))
  ]


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('cli') / 'run')
  result = run('train', f'--flagfile={TINY}', f'--workdir={workdir}')
  assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
  return workdir, result


def test_train_writes_outputs_and_reports_test_bpd(trained):
  workdir, result = trained
  assert 'step 20/20' in result.stdout
  assert 'img/s' in result.stdout and 'bpd' in result.stdout
  assert 'TEST' in result.stdout and 'histogram baseline' in result.stdout
  metrics = [
      json.loads(l) for l in open(os.path.join(workdir, 'metrics.jsonl'))
  ]
  assert [m['step'] for m in metrics] == [10, 20]
  for name in ('samples_00000010.png', 'samples_00000020.png', 'bpd_curve.png'):
    Image.open(os.path.join(workdir, 'figures', name)).verify()
  config = json.load(open(os.path.join(workdir, 'config.json')))
  assert config['model']['image_shape'] == [4, 4, 1]
  assert config['model']['num_levels'] == 17
  assert config['train']['train_steps'] == 20


# Slow: test_reproducibility's SIGKILL test reruns the command and resumes too.
@pytest.mark.slow
def test_rerunning_the_same_command_resumes(trained):
  workdir, _ = trained
  result = run('train', f'--flagfile={TINY}', f'--workdir={workdir}',
               '--train_steps=25')
  assert result.returncode == 0, result.stderr[-2000:]
  assert 'Resumed from' in result.stdout and 'at step 20' in result.stdout
  steps = [
      json.loads(l)['step']
      for l in open(os.path.join(workdir, 'metrics.jsonl'))
  ]
  assert steps[-1] == 25


def test_evaluate_sample_interpolate(trained, tmp_path):
  workdir, _ = trained
  result = run('evaluate', f'--workdir={workdir}', '--num_samples=4')
  assert result.returncode == 0, result.stderr[-2000:]
  assert 'single-sample bound' in result.stdout
  assert 'importance-weighted (k=4' in result.stdout
  last = json.loads(
      open(os.path.join(workdir, 'metrics.jsonl')).readlines()[-1])
  assert last['source'] == 'bin/evaluate' and np.isfinite(last['test_bpd'])

  out = str(tmp_path / 'samples.png')
  result = run('sample', f'--workdir={workdir}', '--num=9', '--temperature=0.7',
               f'--out={out}', f'--npy={tmp_path}/s.npy')
  assert result.returncode == 0, result.stderr[-2000:]
  Image.open(out).verify()
  samples = np.load(f'{tmp_path}/s.npy')
  assert samples.shape == (9, 4, 4, 1) and samples.max() < 17
  again = run('sample', f'--workdir={workdir}', '--num=9', '--temperature=0.7',
              f'--out={out}', f'--npy={tmp_path}/t.npy')
  np.testing.assert_array_equal(samples, np.load(f'{tmp_path}/t.npy'))

  out = str(tmp_path / 'interp.png')
  result = run('interpolate', f'--workdir={workdir}', f'--out={out}',
               '--num_pairs=3', '--num_steps=5')
  assert result.returncode == 0, result.stderr[-2000:]
  Image.open(out).verify()


def test_helpfull_explains_every_config_flag():
  result = run('train', '--helpfull')
  assert result.returncode in (0, 1)
  text = result.stdout + result.stderr
  for cls in flowpp_flags.CONFIG_CLASSES:
    for field in dataclasses.fields(cls):
      if field.name in flowpp_flags._DERIVED_MODEL_FIELDS:  # pylint: disable=protected-access
        continue
      assert f'--{field.name}' in text or f'--[no]{field.name}' in text, (
          field.name)
  assert '--workdir' in text and 'resumes' in text


@pytest.mark.parametrize('args, message, code', [
    (['--flagfile=/nonexistent/x.flags'], 'flagfile', 2),
    ([f'--flagfile={TINY}', '--no_such_flag=1'], 'no_such_flag', 2),
    ([f'--flagfile={TINY}', '--coupling=spline'], 'coupling', 2),
    ([f'--flagfile={TINY}', '--dataset=not_a_dataset'], 'not_a_dataset', 1),
    ([f'--flagfile={TINY}', '--dataset=folder:/nonexistent/images'
     ], '/nonexistent/images', 1),
    ([f'--flagfile={TINY}', '--batch_size=0'], 'batch_size', 1),
    ([f'--flagfile={TINY}', '--batch_size=5000'], 'larger than', 1),
    ([f'--flagfile={TINY}', '--flow=stripe:2 bogus'], 'bogus', 1),
])
def test_bad_input_gives_one_line_error_and_writes_nothing(
    tmp_path, args, message, code):
  workdir = str(tmp_path / 'run')
  result = run('train', *args, f'--workdir={workdir}')
  assert result.returncode == code, result.stderr[-2000:]
  ours = error_lines(result)
  assert len(ours) == 1, result.stderr[-2000:]
  assert ours[0].startswith('train: error: ') and message in ours[0]
  assert not os.path.exists(workdir)


def test_ctrl_c_saves_a_checkpoint_and_exits_130(tmp_path):
  workdir = str(tmp_path / 'run')
  env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL='3')
  env.pop('TF_CONFIG', None)
  process = subprocess.Popen(
      [sys.executable, os.path.join(ROOT, 'bin', 'train'), f'--flagfile={TINY}',
       f'--workdir={workdir}', '--train_steps=100000', '--log_every=1',
       '--eval_every=100000', '--checkpoint_every=100000'],
      env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  for line in process.stdout:
    if line.startswith('step 3/'):
      break
  process.send_signal(signal.SIGINT)
  out, err = process.communicate(timeout=300)
  assert process.returncode == 130, err[-2000:]
  interrupted = re.search(r'Interrupted at step (\d+); checkpoint saved', out)
  assert interrupted, out[-2000:]
  step = int(interrupted.group(1))
  assert step >= 3 and 'Traceback' not in err
  assert os.path.exists(
      os.path.join(workdir, 'checkpoints', f'ckpt-{step}.index'))


def test_unreadable_image_folder_is_a_one_line_error(tmp_path):
  folder = tmp_path / 'images'
  folder.mkdir()
  Image.fromarray(np.zeros((4, 4), np.uint8)).save(folder / 'a.png')
  (folder / 'b.png').write_bytes(b'not a png')
  result = run('train', f'--flagfile={TINY}', f'--dataset=folder:{folder}',
               f'--workdir={tmp_path}/run')
  assert result.returncode != 0
  ours = error_lines(result)
  assert len(ours) == 1 and 'b.png' in ours[0], result.stderr[-2000:]


def test_workdir_of_another_architecture_is_refused(trained, tmp_path):
  workdir, _ = trained
  before = {f: open(os.path.join(workdir, f)).read()
            for f in ('config.json', 'metrics.jsonl')}
  result = run('train', f'--flagfile={TINY}', f'--workdir={workdir}',
               '--filters=16')
  assert result.returncode != 0
  ours = error_lines(result)
  assert len(ours) == 1 and 'different architecture' in ours[0]
  assert 'filters' in ours[0]
  for f, text in before.items():  # Refused before anything is written.
    assert open(os.path.join(workdir, f)).read() == text, f


def test_inference_tools_reject_missing_workdir(tmp_path):
  for tool, extra in (('evaluate', []), ('sample', [f'--out={tmp_path}/x.png']),
                      ('interpolate', [f'--out={tmp_path}/y.png'])):
    result = run(tool, f'--workdir={tmp_path}/missing', *extra)
    assert result.returncode != 0
    ours = error_lines(result)
    assert len(ours) == 1 and 'not a tfp_flowpp workdir' in ours[0], tool
  assert not os.listdir(tmp_path)


@pytest.mark.slow
def test_quickstart_beats_the_histogram_baseline(tmp_path):
  """The README's main job: ≤ 3 minutes on 2 cores, test bpd < 2.42."""
  workdir = str(tmp_path / 'quickstart')
  result = run(
      'train',
      f'--flagfile={ROOT}/configs/quickstart.flags',
      f'--workdir={workdir}',
      timeout=900)
  assert result.returncode == 0, result.stderr[-2000:]
  final = [json.loads(l) for l in open(os.path.join(workdir, 'metrics.jsonl'))
          ][-1]
  print(result.stdout[-600:])
  assert final['test_bpd'] < 2.42
  assert 'beats the per-pixel histogram baseline' in result.stdout


def test_corrupted_checkpoint_is_a_one_line_error(trained, tmp_path):
  import shutil  # pylint: disable=g-import-not-at-top
  workdir = str(tmp_path / 'copy')
  shutil.copytree(trained[0], workdir)
  checkpoints = os.path.join(workdir, 'checkpoints')
  for name in os.listdir(checkpoints):
    if '.data-' in name:
      with open(os.path.join(checkpoints, name), 'r+b') as f:
        f.truncate(16)
  for tool, extra in (('evaluate', []),
                      ('sample', [f'--out={tmp_path}/x.png']),
                      ('train', [f'--flagfile={TINY}', '--train_steps=30'])):
    result = run(tool, f'--workdir={workdir}', *extra)
    assert result.returncode != 0, tool
    ours = error_lines(result)
    assert len(ours) == 1 and 'heckpoint' in ours[0], (tool, result.stderr[-1500:])
  assert not os.path.exists(f'{tmp_path}/x.png')
