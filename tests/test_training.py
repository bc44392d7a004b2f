"""The training loop: distribution, NaN skipping, checkpoints and resume."""

import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

import configs_util
from tfp_flowpp import data as data_lib
from tfp_flowpp import model_builder
from tfp_flowpp.training import atomic_files
from tfp_flowpp.training import checkpoints
from tfp_flowpp.training import evaluation
from tfp_flowpp.training import optimization
from tfp_flowpp.training import progress
from tfp_flowpp.training import strategy as strategy_lib
from tfp_flowpp.training import trainer as trainer_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


tiny_model_config = configs_util.tiny_model_config  # configs/tiny.flags.
DATA = configs_util.tiny_data_config()  # digits at 4x4.


def train_config(**overrides):
  """configs/tiny.flags training, shortened to 6 steps of 16 images."""
  values = dict(
      train_steps=6,
      batch_size=16,
      warmup_steps=2,
      log_every=2,
      eval_every=3,
      checkpoint_every=3,
      num_sample_images=4,
      test_num_samples=2)
  values.update(overrides)
  return configs_util.tiny_train_config(**values)


def mirrored_strategy():
  assert len(tf.config.list_logical_devices('CPU')) >= 2, (
      'conftest should create two logical CPUs')
  return strategy_lib.make_strategy('mirrored', num_cpu_replicas=2)


def _variables(trainer):
  return [v.numpy().copy() for v in trainer.model.trainable_variables]


def test_mirrored_step_equals_single_device_step(tmp_path):
  """One step on 2 replicas == the same gradients summed on one device."""
  config = train_config(grad_clip_norm=0.05)  # Clipping must be global.
  distributed = trainer_lib.Trainer(
      tiny_model_config(),
      DATA,
      config,
      str(tmp_path / 'mirrored'),
      strategy=mirrored_strategy())
  single = trainer_lib.Trainer(
      tiny_model_config(),
      DATA,
      config,
      str(tmp_path / 'single'),
      strategy=tf.distribute.get_strategy())
  for t in (distributed, single):
    t.restore_or_initialize()
  for a, b in zip(_variables(distributed), _variables(single)):
    np.testing.assert_array_equal(a, b)

  batch = next(iter(single.dataset.train_batches(16, start_step=1)))
  step = tf.constant(1, tf.int64)
  dist_batch = next(
      iter(
          distributed.strategy.experimental_distribute_dataset(
              tf.data.Dataset.from_tensors(batch))))
  loss, _, applied = distributed.train_step(dist_batch, step)
  assert bool(applied)

  # Reference: replica r sees half r with seed fold_in([seed, step], r); the
  # optimizer gets the sum of the two halves' gradients (clipped globally).
  model, variables = single.model, single.model.trainable_variables
  grads, total = None, 0.
  for r, half in enumerate(tf.split(batch, 2)):
    seed = tf.random.experimental.stateless_fold_in(
        tf.stack([tf.constant(0, tf.int64), step]), r)
    with tf.GradientTape() as tape:
      bpd = model.nats_to_bits_per_dim(
          model.log_prob(half, seed=seed, training=True))
      part = tf.reduce_sum(bpd) / 16.
    g = tape.gradient(part, variables)
    grads = g if grads is None else [x + y for x, y in zip(grads, g)]
    total += float(part)
  single.optimizer.apply_gradients(zip(grads, variables))
  np.testing.assert_allclose(float(loss), total, rtol=1e-5)
  initial = [
      v.numpy() for v in trainer_lib.Trainer(
          tiny_model_config(),
          DATA,
          config,
          str(tmp_path / 'fresh'),
          strategy=tf.distribute.get_strategy()).model.trainable_variables
  ]
  moved = 0
  for a, b, start in zip(_variables(distributed), _variables(single), initial):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    moved += not np.allclose(a, start)
  assert moved > len(initial) // 2  # The step really changed the weights.
  assert int(distributed.optimizer.iterations.numpy()) == 1


def test_mirrored_strategies_of_one_process_do_not_collide():
  """A second mirrored run (another model, other shapes) still all-reduces."""
  first, second = mirrored_strategy(), mirrored_strategy()
  assert first is second and first.num_replicas_in_sync == 2

  def all_reduce(strategy, n):
    replica = lambda: tf.distribute.get_replica_context().all_reduce(
        tf.distribute.ReduceOp.SUM, tf.ones([n]))
    return strategy.experimental_local_results(
        tf.function(lambda: strategy.run(replica))())[0].numpy()

  np.testing.assert_array_equal(all_reduce(first, 5), np.full([5], 2.))
  np.testing.assert_array_equal(all_reduce(second, 7), np.full([7], 2.))


# One replica runs with -m slow: two take the same path plus the
# cross-replica agreement on skipping.
@pytest.mark.parametrize('replicas', [
    pytest.param(1, marks=pytest.mark.slow), 2])
def test_non_finite_step_is_skipped_and_counted(tmp_path, replicas):
  strategy = (
      mirrored_strategy() if replicas == 2 else tf.distribute.get_strategy())
  config = train_config(warmup_steps=10)  # schedule(t) differs per t.
  trainer = trainer_lib.Trainer(
      tiny_model_config(), DATA, config, str(tmp_path), strategy=strategy)
  trainer.restore_or_initialize()
  step_fn = trainer.train_step
  good = next(iter(trainer.dataset.train_batches(16, start_step=1)))
  # Values >= L (17) are outside the model's range: the preprocessing logit
  # becomes NaN. Poison only the second half (= the second replica's share).
  poisoned = tf.concat(
      [good[:8], tf.fill([8, 4, 4, 1], tf.constant(200, tf.uint8))], axis=0)

  def run(images, step):
    dist = next(
        iter(
            strategy.experimental_distribute_dataset(
                tf.data.Dataset.from_tensors(images))))
    return step_fn(dist, tf.constant(step, tf.int64))

  _, _, applied = run(good, 1)  # Adam moments and EMA copies are non-zero.
  assert bool(applied)
  before = _variables(trainer)
  # Adam m and v, the EMA copies and the iteration count.
  state = lambda: [v.numpy().copy() for v in trainer.optimizer.variables]
  optimizer_before = state()
  iterations = int(trainer.optimizer.iterations.numpy())
  loss, _, applied = run(poisoned, 2)
  assert not bool(applied) and not np.isfinite(float(loss))
  for a, b in zip(before, _variables(trainer)):
    np.testing.assert_array_equal(a, b)
  assert len(optimizer_before) > 3 * len(before)
  for a, b in zip(optimizer_before, state()):
    np.testing.assert_array_equal(a, b)
  assert int(trainer.optimizer.iterations.numpy()) == iterations
  assert int(trainer.skipped.numpy()) == 1
  assert int(trainer.consecutive_skips.numpy()) == 1
  _, _, applied = run(good, 3)
  assert bool(applied)
  assert int(trainer.consecutive_skips.numpy()) == 0
  assert int(trainer.skipped.numpy()) == 1
  assert any(
      not np.array_equal(a, b) for a, b in zip(before, _variables(trainer)))
  # The schedule counts trainer steps, skipped ones included: the third
  # step ran at schedule(2) although only its second update was applied.
  assert int(trainer.step.numpy()) == 3
  assert int(trainer.optimizer.iterations.numpy()) == 2
  np.testing.assert_allclose(
      float(tf.convert_to_tensor(trainer.optimizer.learning_rate)),
      float(optimization.from_config(config)(2)), rtol=1e-6)


class _Stop(Exception):
  pass


def test_ema_swap_is_atomic_under_a_signal(tmp_path, monkeypatch):
  """A signal mid-swap is handled after it; the raw weights come back."""
  trainer = trainer_lib.Trainer(tiny_model_config(), DATA, train_config(),
                                str(tmp_path), stream=io.StringIO())
  trainer.restore_or_initialize()
  batch = next(iter(trainer.dataset.train_batches(16, start_step=0)))
  for step in range(2):
    trainer.train_step(batch, tf.constant(step, tf.int64))
  raw = _variables(trainer)
  with checkpoints.ema_weights(trainer.model, trainer.optimizer):
    ema = _variables(trainer)
  assert sum(not np.array_equal(a, b) for a, b in zip(raw, ema)) > len(raw) // 2
  real = trainer.optimizer.finalize_variable_values
  half = len(raw) // 2

  def half_then_signal(var_list):
    real(var_list[:half])
    signal.raise_signal(signal.SIGTERM)  # Runs a Python handler at once.
    real(var_list[half:])

  def half_then_fail(var_list):
    real(var_list[:half])
    raise RuntimeError('swap failed')

  def raising_handler(signum, frame):
    del signum, frame
    raise _Stop()

  def check_raw():
    for a, b in zip(raw, _variables(trainer)):
      np.testing.assert_array_equal(a, b)

  received = []
  previous = signal.signal(signal.SIGTERM, raising_handler)
  try:
    monkeypatch.setattr(trainer.optimizer, 'finalize_variable_values',
                        half_then_signal)
    # The trainer's SIGTERM handler raises: the swap completes, is undone,
    # and the exception propagates before the block runs.
    with pytest.raises(_Stop):
      with checkpoints.ema_weights(trainer.model, trainer.optimizer):
        pytest.fail('the block ran after an interrupted swap')
    check_raw()
    # A handler that returns is called after the swap; the block sees all
    # the EMA weights.
    signal.signal(signal.SIGTERM, lambda signum, frame: received.append(1))
    with checkpoints.ema_weights(trainer.model, trainer.optimizer):
      assert received == [1]
      for a, b in zip(ema, _variables(trainer)):
        np.testing.assert_array_equal(a, b)
    check_raw()
    # Any other failure mid-swap restores the raw weights too.
    monkeypatch.setattr(trainer.optimizer, 'finalize_variable_values',
                        half_then_fail)
    with pytest.raises(RuntimeError, match='swap failed'):
      with checkpoints.ema_weights(trainer.model, trainer.optimizer):
        pass
    check_raw()
  finally:
    signal.signal(signal.SIGTERM, previous)
  # The handlers in place before the block are back.
  assert signal.getsignal(signal.SIGTERM) is previous


def test_evaluation_and_sampling_use_the_ema_weights(tmp_path):
  """So does export (`restore_for_inference`); raw weights come back."""
  workdir = str(tmp_path / 'run')
  trainer = trainer_lib.Trainer(
      tiny_model_config(), DATA,
      train_config(train_steps=3, eval_every=3, checkpoint_every=3),
      workdir, stream=io.StringIO())
  seen = []
  evaluate, sample = trainer.evaluator.evaluate, trainer._sample_fn

  def seen_by(function):
    def wrapped(*args, **kwargs):
      seen.append((function.__name__, _variables(trainer)))
      return function(*args, **kwargs)
    return wrapped

  trainer.evaluator.evaluate = seen_by(evaluate)
  trainer._sample_fn = seen_by(sample)
  trainer.run()
  # Validation, test, sample grid.
  assert [name for name, _ in seen].count('evaluate') == 2 and len(seen) == 3
  ema_model, _, step = checkpoints.restore_for_inference(workdir)
  raw_model, _, _ = checkpoints.restore_for_inference(workdir, use_ema=False)
  assert step == 3
  ema = [v.numpy() for v in ema_model.trainable_variables]
  raw = [v.numpy() for v in raw_model.trainable_variables]
  assert sum(not np.array_equal(a, b) for a, b in zip(raw, ema)) > len(raw) // 2
  for _, values in seen:
    for a, b in zip(ema, values):
      np.testing.assert_array_equal(a, b)
  # The final checkpoint (written before the final evaluation) and the
  # trainer after it hold the raw weights, bit for bit.
  for a, b in zip(raw, _variables(trainer)):
    np.testing.assert_array_equal(a, b)


def test_training_run_writes_every_output_and_resumes(tmp_path):
  workdir = str(tmp_path / 'run')
  record = trainer_lib.Trainer(tiny_model_config(), DATA, train_config(),
                               workdir).run()
  assert record['step'] == 6 and np.isfinite(record['test_bpd'])
  metrics = [
      json.loads(l) for l in open(os.path.join(workdir, 'metrics.jsonl'))
  ]
  assert [m['step'] for m in metrics] == [3, 6]
  for key in ('step', 'epoch', 'train_bpd', 'val_bpd', 'images_per_sec',
              'wall_time'):
    assert all(key in m for m in metrics), key
  assert 'test_bpd' in metrics[-1] and 'test_bpd' not in metrics[0]
  figures = os.listdir(os.path.join(workdir, 'figures'))
  assert {
      'samples_00000003.png', 'samples_00000006.png', 'bpd_curve.png',
      'samples_latest.png'
  } <= set(figures)
  assert os.listdir(os.path.join(workdir, 'tensorboard'))
  assert tf.train.latest_checkpoint(os.path.join(workdir, 'checkpoints'))
  # Another architecture is refused before anything is written.
  stamp = {
      f: os.path.getmtime(os.path.join(workdir, f))
      for f in ('config.json', 'metrics.jsonl')
  }
  with pytest.raises(ValueError, match='different architecture.*filters'):
    trainer_lib.Trainer(
        tiny_model_config(filters=16), DATA, train_config(), workdir)
  for f, t in stamp.items():
    assert os.path.getmtime(os.path.join(workdir, f)) == t
  # Extending train_steps continues from step 6, not from scratch, and
  # wall/CPU seconds (so --max_cpu_seconds) continue from the checkpoint.
  first = record
  resumed = trainer_lib.Trainer(tiny_model_config(), DATA,
                                train_config(train_steps=9), workdir)
  assert resumed.restore_or_initialize() == 6
  assert resumed.cpu_seconds == pytest.approx(first['cpu_seconds'])
  assert resumed.elapsed == pytest.approx(first['elapsed_sec'])
  record = resumed.run()
  assert record['cpu_seconds'] > first['cpu_seconds'] > 0.
  assert record['elapsed_sec'] > first['elapsed_sec'] > 0.
  metrics = [
      json.loads(l) for l in open(os.path.join(workdir, 'metrics.jsonl'))
  ]
  assert [m['step'] for m in metrics] == [3, 6, 9]
  # Re-running the finished run prints the stored result and changes nothing
  # (no duplicate record, no second test evaluation).
  stream = io.StringIO()
  again = trainer_lib.Trainer(tiny_model_config(), DATA,
                              train_config(train_steps=9), workdir,
                              stream=stream)
  again.evaluator.evaluate = lambda *a, **k: pytest.fail('re-evaluated')
  assert again.run() == metrics[-1]
  assert open(os.path.join(workdir, 'metrics.jsonl')).read().count('\n') == 3
  assert (f'Already trained to step 9 (train_steps=9): val '
          f'{metrics[-1]["val_bpd"]:.4f}, TEST {metrics[-1]["test_bpd"]:.4f} '
          'bits/dim') in stream.getvalue()
  # A budget already spent before the resume stops the resumed run at once.
  budget = trainer_lib.Trainer(
      tiny_model_config(), DATA, train_config(
          train_steps=20, max_cpu_seconds=record['cpu_seconds'] / 2),
      workdir, stream=io.StringIO())
  assert budget.run()['step'] == 9


def _random_dataset(n, levels=17, shape=(4, 4, 1), **config):
  images = np.random.default_rng(n).integers(0, levels, (n,) + shape,
                                             dtype=np.uint8)
  return data_lib.from_arrays(images, num_levels=levels, name='random',
                              config=data_lib.DataConfig(**config))


def _tfb_glow_model(model_config):
  """TFP's `tfb.Glow` as a `DiscreteImageFlow`: its shapes must be static."""
  import tensorflow_probability as tfp  # pylint: disable=g-import-not-at-top
  from tfp_flowpp import bijectors as fb  # pylint: disable=g-import-not-at-top
  from tfp_flowpp.distributions import dequantization  # pylint: disable=g-import-not-at-top
  from tfp_flowpp.distributions import discrete_image_flow  # pylint: disable=g-import-not-at-top
  tfb = tfp.bijectors
  shape, levels = model_config.image_shape, model_config.num_levels
  glow = tfb.Glow(
      output_shape=shape, num_glow_blocks=2, num_steps_per_block=1,
      coupling_bijector_fn=lambda s: tfb.GlowDefaultNetwork(s, num_hidden=8),
      exit_bijector_fn=tfb.GlowDefaultExitNetwork)
  flow = tfb.Chain([
      tfb.Reshape(event_shape_out=shape, event_shape_in=[int(np.prod(shape))]),
      tfb.Invert(glow),
      fb.LogitPreprocess(levels, 0.9)
  ])
  return discrete_image_flow.DiscreteImageFlow(
      flow, dequantization.UniformDequantizer(shape), shape, levels)


def test_model_fn_trains_a_flow_that_needs_static_shapes(tmp_path):
  """`model_fn` injects any DiscreteImageFlow; tfb.Glow trains + evaluates."""
  calls = []

  def model_fn(model_config):
    model = _tfb_glow_model(model_config)
    calls.append((model_config, tf.distribute.has_strategy(), model))
    return model

  trainer = trainer_lib.Trainer(
      tiny_model_config(), DATA,
      train_config(train_steps=3, eval_every=3, eval_batch_size=100),
      str(tmp_path / 'run'), model_fn=model_fn,
      strategy=mirrored_strategy())
  assert len(calls) == 1 and calls[0][1]  # Once, inside the scope.
  assert calls[0][0].image_shape == (4, 4, 1) and calls[0][0].num_levels == 17
  assert trainer.model is calls[0][2]
  record = trainer.run()  # Validation: 144 images = batches of 100 + 44.
  assert record['step'] == 3 and record['skipped_steps'] == 0
  assert np.isfinite(record['val_bpd']) and np.isfinite(record['test_bpd'])


def test_evaluator_traces_one_static_batch_and_masks_the_padding():
  dataset = _random_dataset(10, validation_size=0, test_size=0)
  model = model_builder.build_model(
      tiny_model_config(image_shape=(4, 4, 1), num_levels=17))
  model.initialize(tf.constant(dataset.arrays('train')), seed=[0, 1])
  evaluator = evaluation.BpdEvaluator(model, seed=5)
  result = evaluator.evaluate(dataset.eval_batches('train', 4))  # 4, 4, 2.
  function = evaluator._functions[1]  # pylint: disable=protected-access
  assert function.experimental_get_tracing_count() == 1
  assert result['num_images'] == 10
  # The padding is invisible: the same bounds as unpadded batches.
  expected = [
      model.nats_to_bits_per_dim(model.log_prob(
          batch, seed=tf.random.experimental.stateless_fold_in(
              tf.constant([5, i]), 0)))
      for i, batch in enumerate(dataset.eval_batches('train', 4))
  ]
  np.testing.assert_allclose(result['bpd'], np.mean(np.concatenate(expected)),
                             rtol=1e-5)
  assert evaluator.evaluate(dataset.eval_batches('train', 4),
                            max_images=7)['num_images'] == 7
  assert function.experimental_get_tracing_count() == 1
  # Fewer images than a batch: batches of (and padding to) max_images.
  assert evaluator.evaluate(dataset.eval_batches('train', 4), num_samples=3,
                            max_images=3)['num_images'] == 3
  iw = evaluator._functions[3]  # pylint: disable=protected-access
  iw.get_concrete_function(
      tf.TensorSpec([3, 4, 4, 1], tf.uint8), tf.TensorSpec([3], tf.bool),
      tf.TensorSpec([2], tf.int32))
  assert iw.experimental_get_tracing_count() == 1  # That was its one trace.


def test_evaluator_pads_to_a_multiple_of_the_replicas():
  dataset = _random_dataset(10, validation_size=0, test_size=0)
  strategy = mirrored_strategy()
  with strategy.scope():
    model = model_builder.build_model(
        tiny_model_config(image_shape=(4, 4, 1), num_levels=17))
  model.initialize(tf.constant(dataset.arrays('train')), seed=[0, 1])
  traced_shapes = []

  class Recorder:  # The model, noting the image shapes it is traced with.

    def log_prob(self, images, seed):
      traced_shapes.append(tuple(images.shape))
      return model.log_prob(images, seed=seed)

    def nats_to_bits_per_dim(self, nats):
      return model.nats_to_bits_per_dim(nats)

  evaluator = evaluation.BpdEvaluator(Recorder(), strategy, seed=5)
  result = evaluator.evaluate(dataset.eval_batches('train', 3))  # 3,3,3,1.
  assert result['num_images'] == 10
  assert traced_shapes == [(2, 4, 4, 1)] * 2  # Static, once per replica.
  # Each batch is padded to 4: replica r gets rows 2r, 2r + 1 and the seed
  # folded with r; only the real rows count.
  bounds = []
  for i, batch in enumerate(dataset.eval_batches('train', 3)):
    for r in range(2):
      rows = batch[2 * r:2 * r + 2]
      if len(rows):
        seed = tf.random.experimental.stateless_fold_in(
            tf.constant([5, i]), r)
        bounds.append(model.nats_to_bits_per_dim(model.log_prob(rows,
                                                                seed=seed)))
  np.testing.assert_allclose(result['bpd'], np.mean(np.concatenate(bounds)),
                             rtol=1e-5)


def test_trainer_holds_its_state_and_run_reuses_it(tmp_path):
  workdir = str(tmp_path / 'run')
  stream = io.StringIO()
  trainer = trainer_lib.Trainer(tiny_model_config(), DATA,
                                train_config(train_steps=4, eval_every=4),
                                workdir, stream=stream)
  assert not os.path.exists(os.path.join(workdir, 'config.json'))
  assert not os.path.exists(os.path.join(workdir, 'checkpoints'))
  assert trainer.restore_or_initialize() == 0
  # A custom loop: two steps with the trainer's own step function...
  for step in range(2):
    batch = next(iter(trainer.dataset.train_batches(16, start_step=step)))
    trainer.train_step(batch, tf.constant(step, tf.int64))
  assert int(trainer.step.numpy()) == 2
  # ...then run() continues from them (no second restore from step 0), with
  # the same step function.
  step_fn, calls = trainer.train_step, []
  trainer.train_step = lambda *args: calls.append(1) or step_fn(*args)
  record = trainer.run()
  assert record['step'] == 4 and len(calls) == 2
  assert 'step 4/4' in stream.getvalue()
  assert 'step 2/4' not in stream.getvalue()  # Steps 1-2 were not redone.
  assert 'Resumed' not in stream.getvalue()
  assert trainer.restore_or_initialize() == 4
  assert step_fn.experimental_get_tracing_count() == 1
  assert trainer.cpu_seconds > 0 and trainer.elapsed > 0


def test_start_prints_the_data_and_kept_classes(tmp_path):
  images = np.random.default_rng(0).integers(0, 17, (100, 4, 4), np.uint8)
  path = str(tmp_path / 'data.npz')
  np.savez(path, images=images, labels=np.arange(100) % 5, num_levels=17)
  data = data_lib.DataConfig(dataset=f'npz:{path}', classes=(1, 3),
                             validation_size=0.1, test_size=0.2)
  stream = io.StringIO()
  trainer = trainer_lib.Trainer(
      tiny_model_config(), data, train_config(init_batch_size=16),
      str(tmp_path / 'run'), stream=stream)
  trainer.restore_or_initialize()
  line = stream.getvalue().splitlines()[0]
  sizes = trainer.dataset.num_examples
  assert sum(sizes.values()) == 40  # Two of the five classes.
  assert line == (
      f'Data: {trainer.dataset.name} (source npz:{path}; classes 1,3), 17 '
      f'levels, images 4x4x1; train {sizes["train"]}, validation '
      f'{sizes["validation"]}, test {sizes["test"]} images.'), line


def test_throughput_below_10_images_per_second_shows_a_decimal():
  stream = io.StringIO()
  bar = progress.ProgressBar(10, stream=stream)
  for rate in (0.44, 9.96, 1234.4):
    bar.update(1, **{'img/s': rate})
  rates = re.findall(r'(\S+) img/s', stream.getvalue())
  assert rates == ['0.4', '10.0', '1,234'], rates


def test_batch_larger_than_the_data_fails_before_writing(tmp_path):
  workdir = str(tmp_path / 'run')
  dataset = _random_dataset(30, validation_size=0, test_size=0)
  for config in (train_config(batch_size=32), train_config(init_batch_size=64,
                                                           batch_size=8)):
    with pytest.raises(data_lib.DataError, match='larger than the 30'):
      trainer_lib.Trainer(tiny_model_config(), dataset.config, config,
                          workdir, dataset=dataset)
  assert not os.path.exists(workdir)


def test_atomic_write_leaves_old_file_or_new_file(tmp_path):
  path = tmp_path / 'sub' / 'f.txt'
  atomic_files.atomic_write_bytes(str(path), b'old')
  with pytest.raises(TypeError):
    atomic_files.atomic_write_bytes(str(path), 'not bytes')
  assert path.read_bytes() == b'old'
  assert os.listdir(path.parent) == ['f.txt']  # No temporary file left.


def _train_command(workdir, *extra):
  return [
      sys.executable,
      os.path.join(ROOT, 'bin', 'train'),
      f'--flagfile={os.path.join(ROOT, "configs", "tiny.flags")}',
      f'--workdir={workdir}', *extra
  ]


def _env():
  env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL='3')
  env.pop('TF_CONFIG', None)
  return env


@pytest.mark.slow
def test_sigkill_mid_training_resumes_from_last_checkpoint(tmp_path):
  workdir = str(tmp_path / 'run')
  command = _train_command(workdir, '--train_steps=400', '--checkpoint_every=5',
                           '--eval_every=1000', '--log_every=5')
  process = subprocess.Popen(
      command,
      env=_env(),
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      text=True)
  checkpoints = os.path.join(workdir, 'checkpoints')
  deadline = time.time() + 240
  while time.time() < deadline:
    latest = tf.train.latest_checkpoint(checkpoints) if os.path.exists(
        checkpoints) else None
    if latest and int(latest.rsplit('-', 1)[1]) >= 10:
      break
    time.sleep(0.2)
  else:
    process.kill()
    pytest.fail('no checkpoint beyond step 10 within the deadline')
  process.send_signal(signal.SIGKILL)
  process.wait()
  killed_at = int(tf.train.latest_checkpoint(checkpoints).rsplit('-', 1)[1])
  assert not [f for f in os.listdir(workdir) if f.startswith('.tmp')]
  result = subprocess.run(
      _train_command(workdir, '--train_steps=40', '--checkpoint_every=5',
                     '--eval_every=1000', '--log_every=5'),
      env=_env(),
      capture_output=True,
      text=True,
      timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  resumed = re.search(r'Resumed from .* at step (\d+)', result.stdout)
  assert resumed, result.stdout[-2000:]
  resumed_at = int(resumed.group(1))
  assert resumed_at >= killed_at >= 10
  latest = tf.train.latest_checkpoint(checkpoints)
  assert latest.endswith('-40') or resumed_at >= 40
  metrics = [
      json.loads(l) for l in open(os.path.join(workdir, 'metrics.jsonl'))
  ]
  steps = [m['step'] for m in metrics]
  assert steps == sorted(set(steps)) and steps[-1] == max(40, resumed_at)


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


@pytest.mark.slow
def test_multi_worker_training_with_two_local_processes(tmp_path):
  workdir = str(tmp_path / 'run')
  ports = [_free_port(), _free_port()]
  cluster = {'worker': [f'127.0.0.1:{p}' for p in ports]}
  processes = []
  for index in range(2):
    env = _env()
    env['TF_CONFIG'] = json.dumps({
        'cluster': cluster,
        'task': {
            'type': 'worker',
            'index': index
        }
    })
    processes.append(
        subprocess.Popen(
            _train_command(workdir, '--train_steps=6', '--eval_every=3',
                           '--checkpoint_every=3', '--batch_size=16'),
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True))
  outputs = [p.communicate(timeout=600)[0] for p in processes]
  for p, out in zip(processes, outputs):
    assert p.returncode == 0, out[-3000:]
  assert 'MultiWorkerMirroredStrategy on 2 replica(s)' in outputs[0], outputs[0]
  metrics = [
      json.loads(l) for l in open(os.path.join(workdir, 'metrics.jsonl'))
  ]
  assert [m['step'] for m in metrics] == [3, 6]
  assert np.isfinite(metrics[-1]['test_bpd'])
  # Only the chief wrote the real checkpoints.
  assert tf.train.latest_checkpoint(os.path.join(workdir, 'checkpoints'))
  assert 'TEST' in outputs[0] and 'TEST' not in outputs[1]


def test_cpu_budget_stops_training_and_still_evaluates(tmp_path):
  workdir = str(tmp_path / 'run')
  record = trainer_lib.Trainer(
      tiny_model_config(), DATA,
      train_config(train_steps=100000, eval_every=100000, max_cpu_seconds=8.),
      workdir).run()
  assert 0 < record['step'] < 100000
  assert record['cpu_seconds'] >= 8.
  assert np.isfinite(record['test_bpd'])


@pytest.mark.parametrize('signum', [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_training_at_the_next_step_with_a_checkpoint(
    tmp_path, signum):
  """The handler only sets a flag (a raising one can be lost in a finalizer):
  the step in flight finishes, the checkpoint holds it, handlers come back."""
  trainer = trainer_lib.Trainer(
      tiny_model_config(), DATA,
      train_config(train_steps=50, eval_every=50, checkpoint_every=50),
      str(tmp_path), stream=io.StringIO())
  trainer.restore_or_initialize()
  real_step = trainer.train_step
  calls = []

  class Finalized:
    def __del__(self):
      # The handler runs inside a finalizer, where Python drops (prints
      # "Exception ignored") anything it raises.
      signal.raise_signal(signum)

  def step_then_signal(*args):
    result = real_step(*args)
    calls.append(1)
    if len(calls) == 3:
      Finalized()  # Collected at once.
    return result

  trainer.train_step = step_then_signal
  before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
  with pytest.raises(KeyboardInterrupt):
    trainer.run()
  assert len(calls) == 3
  assert 'Interrupted at step 3; checkpoint saved' in trainer.stream.getvalue()
  assert os.path.exists(tmp_path / 'checkpoints' / 'ckpt-3.index')
  assert {s: signal.getsignal(s) for s in before} == before
