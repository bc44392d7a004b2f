"""Resuming a run: bit-identical under --deterministic, and within run-to-run
noise without it (docs/reproducibility.md).

Both tests train configs/tiny.flags with dropout 0.2 (stateless masks seeded
per step and layer) for 2N steps, with an evaluation (EMA swap) at step N,
and compare every tensor of the final checkpoints: model weights, ActNorm
state, Adam moments, EMA averages, iteration and step counters.
"""

import io
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

import configs_util
from tfp_flowpp.training import trainer as trainer_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N = 4  # Steps before the interruption; the runs train 2N.
FLAGS = ('--dropout=0.2', f'--train_steps={2 * N}', f'--checkpoint_every={N}',
         f'--eval_every={N}', '--log_every=1', '--batch_size=16',
         '--test_num_samples=2', '--num_sample_images=4',
         '--max_eval_images=64')


def _checkpoint(workdir):
  """Every tensor of the latest checkpoint (strings included), by key.

  All but the clock (training wall and CPU seconds so far, which no two runs
  share): its presence and sense are checked, then it is left out.
  """
  path = tf.train.latest_checkpoint(os.path.join(workdir, 'checkpoints'))
  assert path and path.endswith(f'-{2 * N}'), path
  reader = tf.train.load_checkpoint(path)
  tensors = {k: reader.get_tensor(k)
             for k in reader.get_variable_to_shape_map()}
  wall, cpu = tensors.pop('clock/.ATTRIBUTES/VARIABLE_VALUE')
  assert 0. < wall and 0. < cpu, (wall, cpu)
  return tensors


def _max_difference(a, b):
  assert a.keys() == b.keys()
  return max(
      float(np.max(np.abs(a[k].astype(np.float64) - b[k]), initial=0.))
      for k in a
      if isinstance(a[k], np.ndarray) and a[k].dtype.kind in 'fiu')


def _assert_bit_identical(a, b):
  assert a.keys() == b.keys()
  different = [k for k in a if not np.array_equal(a[k], b[k])]
  assert not different, (f'{len(different)} of {len(a)} tensors differ '
                         f'(max |d| {_max_difference(a, b):.3g}), e.g. '
                         f'{different[:3]}')


def _covers_the_state(tensors):
  """The keys include every part of the state the docstring lists."""
  keys = ' '.join(tensors)
  for part in ('model/', '/log_scale/', '/initialized/',
               'optimizer/_variables/', 'optimizer/_iterations', 'step/',
               'skipped/', 'consecutive_skips/'):
    assert part in keys, part
  # Adam m, v and the EMA copy for every trainable variable.
  optimizer = [k for k in tensors if k.startswith('optimizer/_variables/')]
  model = [k for k in tensors if k.startswith('model/')]
  assert len(optimizer) >= 3 * len(model) // 2, (len(optimizer), len(model))


def _env():
  env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL='3')
  env.pop('TF_CONFIG', None)
  return env


def _train(workdir, *extra):
  return [
      sys.executable,
      os.path.join(ROOT, 'bin', 'train'),
      f'--flagfile={os.path.join(ROOT, "configs", "tiny.flags")}',
      f'--workdir={workdir}', *FLAGS, *extra
  ]


# bin/train, SIGKILLed by its own stdout as soon as it reports step N + 1:
# checkpoint N is on disk, step N + 1 is trained but lost.
_KILLED_AFTER_N = textwrap.dedent('''
    import io, os, runpy, signal, sys
    class KillAfterN(io.TextIOBase):
      def write(self, text):
        if text.startswith('step {after}/'):
          os.kill(os.getpid(), signal.SIGKILL)
        return sys.__stdout__.write(text)
    sys.stdout = KillAfterN()
    sys.argv = {argv!r}
    sys.path.insert(0, os.path.dirname(sys.argv[0]))
    runpy.run_path(sys.argv[0], run_name='__main__')
''')


# bfloat16 too: the default precision (auto) picks it on AMX/AVX512-BF16 CPUs
# (slow: two more trainings; run with -m slow).
@pytest.mark.parametrize(
    'policy', ['float32', pytest.param('mixed_bfloat16', marks=pytest.mark.slow)])
def test_deterministic_resume_after_sigkill_is_bit_identical(tmp_path, policy):
  """Killed at N and resumed == an uninterrupted run, bit for bit.

  The killed run's first N steps ran in another process than the
  uninterrupted run, so equality also shows the runs are deterministic.
  """
  a, b = (str(tmp_path / name) for name in 'ab')
  flags = ('--deterministic', f'--precision={policy}')
  killed_argv = _train(b, *flags)[1:]
  processes = [
      subprocess.Popen(
          _train(a, *flags), env=_env(), stdout=subprocess.PIPE,
          stderr=subprocess.STDOUT, text=True),
      subprocess.Popen(
          [sys.executable, '-c',
           _KILLED_AFTER_N.format(after=N + 1, argv=killed_argv)],
          env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
          text=True),
  ]
  outputs = [p.communicate(timeout=600)[0] for p in processes]
  assert processes[0].returncode == 0, outputs[0][-3000:]
  assert processes[1].returncode == -9, outputs[1][-3000:]
  assert f'step {N + 1}/' not in outputs[1]
  assert tf.train.latest_checkpoint(os.path.join(b, 'checkpoints')).endswith(
      f'-{N}')
  resumed = subprocess.run(
      _train(b, *flags), env=_env(), capture_output=True,
      text=True, timeout=600)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  # Rerunning the same command resumes: from checkpoint N to step 2N.
  assert 'Resumed from' in resumed.stdout, resumed.stdout[-3000:]
  assert f'at step {N} ' in resumed.stdout, resumed.stdout[-3000:]
  with open(os.path.join(b, 'metrics.jsonl')) as f:
    assert json.loads(f.readlines()[-1])['step'] == 2 * N
  assert f'Precision: {policy} ' in resumed.stdout, resumed.stdout[-3000:]
  uninterrupted, killed = (_checkpoint(w) for w in (a, b))
  _covers_the_state(uninterrupted)
  _assert_bit_identical(uninterrupted, killed)


class _CtrlCAtStep(io.StringIO):
  """Progress stream that raises KeyboardInterrupt when step ``n`` is shown."""

  def __init__(self, n):
    super().__init__()
    self.n = n

  def write(self, text):
    if self.n and text.startswith(f'step {self.n}/'):
      self.n = None
      raise KeyboardInterrupt()
    return super().write(text)


@pytest.mark.slow
def test_resume_differs_no_more_than_two_uninterrupted_runs(tmp_path):
  """Without --deterministic: same data, noise, masks and schedule."""
  values = configs_util.flag_values(configs_util.config_path('tiny'), FLAGS)
  import flowpp_flags  # pylint: disable=g-import-not-at-top
  configs = (flowpp_flags.model_config(values, configs_util.TINY_IMAGE_SHAPE,
                                       configs_util.TINY_NUM_LEVELS),
             flowpp_flags.data_config(values),
             flowpp_flags.train_config(values))
  assert not configs[2].deterministic and configs[0].dropout == 0.2

  def run(workdir, interrupt_at=None):
    trainer = trainer_lib.Trainer(
        *configs, workdir, stream=_CtrlCAtStep(interrupt_at))
    try:
      trainer.run()
    except KeyboardInterrupt:
      assert interrupt_at, 'interrupted without being asked to'
      return run(workdir)  # Re-run the same command: resumes.
    return _checkpoint(workdir)

  first = run(str(tmp_path / 'first'))
  second = run(str(tmp_path / 'second'))
  # Ctrl-C after step N + 1 (the interrupt handler saves step N + 1).
  resumed = run(str(tmp_path / 'resumed'), interrupt_at=N + 1)
  _covers_the_state(first)
  noise = _max_difference(first, second)
  difference = _max_difference(first, resumed)
  assert difference <= 2 * noise + 1e-6, (difference, noise)
