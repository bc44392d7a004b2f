"""Mixed precision: low-precision networks, full-precision flow arithmetic.

Under ``mixed_bfloat16`` / ``mixed_float16`` every convolution of the
conditioner networks runs in the low dtype while every bijector output and
log-det, the bounds and bits/dim stay in the model dtype; gradients reach
every variable; float16 loss scaling skips overflows without counting them;
checkpoints move between precisions; and the exact paths (``encode`` /
``decode``) stay exact.

Tolerances of the low-precision paths (tiny models, weights perturbed so
the networks matter): the bound moves by < 0.02 bits/dim from float32's,
and the continuous round trip ``decode_continuous(encode_continuous(y))``
is as exact as in float32 (1e-4): the conditioning half passes a coupling
unchanged, so its network sees the same input in both directions, and the
cast to the low dtype rounds the float32 reconstruction errors of the later
layers away (measured: the same 1e-5 as float32 at weight noise 0.2).
"""

import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import configs_util
import flow_test_util
from tfp_flowpp import export
from tfp_flowpp import model_builder
from tfp_flowpp import precision
from tfp_flowpp import training
from tfp_flowpp.training import loss_scale as loss_scale_lib
from tfp_flowpp.training import strategy as strategy_lib
from tfp_flowpp.training import trainer as trainer_lib

tfb = tfp.bijectors

MIXED = ('mixed_bfloat16', 'mixed_float16')
_TRANSFORM_METHODS = ('_forward', '_inverse', '_forward_log_det_jacobian',
                      '_inverse_log_det_jacobian', '_transform_and_log_det',
                      '_inverse_transform_and_log_det')


def _images(n=16, seed=0):
  return tf.random.stateless_uniform([n, 4, 4, 1], [seed, 1], 0,
                                     configs_util.TINY_NUM_LEVELS, tf.int32)


def _model(policy, seed_noise=0.05, **overrides):
  """A tiny model, initialised and perturbed so its networks matter."""
  model = model_builder.build_model(
      configs_util.tiny_model_config(precision=policy, **overrides))
  model.initialize(_images(64), seed=[1, 2])
  if seed_noise:
    flow_test_util.perturb(model, seed_noise)
  return model


def _record_bijector_dtypes(model):
  """Wraps every bijector's transform methods to record output dtypes."""
  seen = []

  def wrap(bijector, method):
    original = getattr(bijector, method)

    def recorded(*args, **kwargs):
      out = original(*args, **kwargs)
      for t in tf.nest.flatten(out):
        if tf.is_tensor(t):
          seen.append((type(bijector).__name__, method, t.dtype))
      return out

    object.__setattr__(bijector, method, recorded)

  for module in model.submodules:
    if isinstance(module, tfb.Bijector):
      for method in _TRANSFORM_METHODS:
        if method in vars(type(module)) or any(
            method in vars(c)
            for c in type(module).__mro__[1:]
            if c.__module__.startswith('tfp_flowpp')):
          wrap(module, method)
  return seen


@pytest.mark.parametrize('policy,dtype', [('mixed_bfloat16', 'float32'),
                                          ('mixed_bfloat16', 'float64'),
                                          ('mixed_float16', 'float32')])
def test_flow_arithmetic_stays_in_the_model_dtype(policy, dtype):
  model = _model(policy, dtype=dtype)
  float_dtype = tf.as_dtype(dtype)
  low = precision.LOW_DTYPES[policy]
  seen = _record_bijector_dtypes(model)
  x = _images()
  outputs = [
      model.log_prob(x, seed=[3, 4]),
      model.importance_weighted_log_prob(x, 3, seed=[3, 4]),
      model.bits_per_dim(x, seed=[3, 4]),
      model.encode(x, noise='sample', seed=[5, 6]),
      model.decode_continuous(model.sample_latents(4, seed=[7, 8])),
  ]
  assert all(o.dtype == float_dtype for o in outputs)
  kinds = {name for name, _, _ in seen}
  assert {'MixLogisticCoupling', 'ActNorm', 'InvertibleConv1x1',
          'LogitPreprocess'} <= kinds, kinds
  assert {method for _, method, _ in seen} >= {
      '_transform_and_log_det', '_inverse_transform_and_log_det'}
  wrong = [s for s in seen if s[2] != float_dtype]
  assert not wrong, wrong[:3]
  # ... while every convolution of the networks computes in the low dtype.
  graph = tf.function(lambda x: model.log_prob(x, seed=[3, 4])
                     ).get_concrete_function(x).graph
  convs = [op for op in graph.get_operations() if op.type == 'Conv2D']
  assert convs and all(op.get_attr('T') == low for op in convs)


@pytest.mark.parametrize('policy', MIXED)
def test_low_precision_bound_is_close_and_its_gradients_reach_every_variable(
    policy):
  reference = _model('float32')
  model = _model(policy)
  for a, b in zip(reference.trainable_variables, model.trainable_variables):
    b.assign(a)  # (ActNorm's data-dependent initialisation differs slightly.)
  x = _images()
  expected = reference.bits_per_dim(x, seed=[3, 4])
  with tf.GradientTape() as tape:
    bpd = model.bits_per_dim(x, seed=[3, 4], training=True)
    loss = tf.reduce_mean(bpd)
  np.testing.assert_allclose(bpd, expected, atol=0.02)
  assert np.max(np.abs(bpd - expected)) > 0  # Really computed in low dtype.
  grads = tape.gradient(loss, model.trainable_variables)
  missing = [v.name for v, g in zip(model.trainable_variables, grads)
             if g is None]
  assert not missing, missing[:3]
  assert all(bool(tf.reduce_all(tf.math.is_finite(g))) for g in grads)
  assert all(float(tf.reduce_max(tf.abs(g))) > 0 for g in grads)


@pytest.mark.parametrize('low', [tf.bfloat16, tf.float16])
@pytest.mark.parametrize('fused', [True, False])
def test_nonlinearities_of_16_bit_networks_compute_in_float32(
    low, fused, monkeypatch):
  """concat_elu and gate: float32 inside, the network's dtype outside.

  Through TensorFlow's ops (float32 between two casts) or, for bfloat16,
  the fused kernels (`fused_elementwise`, float32 registers): the same
  values, one rounding of the float32 result.
  """
  from tfp_flowpp.networks import fused_elementwise  # pylint: disable=g-import-not-at-top
  from tfp_flowpp.networks import layers  # pylint: disable=g-import-not-at-top
  monkeypatch.setenv('TFP_FLOWPP_FUSED_ELEMENTWISE', '1' if fused else '0')
  assert fused_elementwise.applies(low) == (fused and low == tf.bfloat16)
  x32 = tf.random.stateless_normal([3, 5, 5, 8], seed=[4, 2]) * 3.
  x = tf.cast(x32, low)
  def gated_residual(h):
    return layers.gated_residual(tf.ones([3, 5, 5, 4], h.dtype), h)

  for fn in (layers.concat_elu, layers.gate, gated_residual):
    with tf.GradientTape() as tape:
      tape.watch(x)
      y = fn(x)
    assert y.dtype == low
    assert tape.gradient(y, x).dtype == low
    # One rounding of the float32 result of the rounded input, no more
    # (but the TF path of gated_residual rounds the gate before the add).
    reference = tf.cast(fn(tf.cast(x, tf.float32)), low)
    if fn is not gated_residual or fused_elementwise.applies(low):
      np.testing.assert_array_equal(y.numpy(), reference.numpy())
    np.testing.assert_allclose(
        tf.cast(y, tf.float32), fn(x32), rtol=2e-2, atol=2e-2)
  graph = tf.function(layers.concat_elu).get_concrete_function(
      tf.TensorSpec([None, 4], low)).graph
  types = [op.type for op in graph.get_operations()]
  if fused_elementwise.applies(low):
    assert 'FlowppConcatElu' in types and 'Elu' not in types
  else:
    elus = [op for op in graph.get_operations() if op.type == 'Elu']
    assert elus and all(op.outputs[0].dtype == tf.float32 for op in elus)


@pytest.mark.parametrize('policy', ('float32',) + MIXED)
def test_encode_decode_are_exact_in_every_precision(policy):
  model = _model(policy, seed_noise=0.2)
  x = _images(32, seed=5)
  np.testing.assert_array_equal(
      model.decode(flow_test_util.fresh(model.encode(x))), x)
  y = tf.random.stateless_uniform([16, 4, 4, 1], [4, 0], 0., 17.)
  back = model.decode_continuous(
      flow_test_util.fresh(model.encode_continuous(y)))
  np.testing.assert_allclose(back, y, atol=1e-4)


def test_auto_resolves_from_the_cpu_flags(monkeypatch, tmp_path):
  cpuinfo = tmp_path / 'cpuinfo'
  cpuinfo.write_text('processor : 0\nflags : fpu avx512f avx512_bf16 sse\n')
  assert precision.cpu_bf16_flags(str(cpuinfo)) == ('avx512_bf16',)
  cpuinfo.write_text('flags : fpu avx2\n')
  assert precision.cpu_bf16_flags(str(cpuinfo)) == ()
  assert precision.resolve('mixed_float16') == ('mixed_float16', 'requested')
  policy, reason = precision.resolve('auto')
  assert policy in ('float32', 'mixed_bfloat16') and reason.startswith('auto')
  with pytest.raises(ValueError, match='precision must be one of'):
    precision.resolve('bfloat16')


def test_auto_is_the_default_and_resolves_to_what_this_machine_has(tmp_path):
  """No GPU here: bfloat16 exactly when /proc/cpuinfo has a bf16 flag."""
  from tfp_flowpp import config as config_lib  # pylint: disable=g-import-not-at-top
  assert config_lib.ModelConfig().precision == 'auto'
  expected = 'mixed_bfloat16' if precision.cpu_bf16_flags() else 'float32'
  policy, reason = precision.resolve('auto')
  assert policy == expected, reason
  trainer = trainer_lib.Trainer(
      configs_util.tiny_model_config(precision='auto'),
      configs_util.tiny_data_config(), _train_config(), str(tmp_path / 'run'))
  # The run stores (and its networks compute in) the resolved policy.
  assert trainer.model_config.precision == expected
  assert trainer.precision_message == f'Precision: {expected} ({reason}).'
  assert trainer.attention_message == 'Attention: ' + (
      'fused CPU kernel (auto).' if expected == 'mixed_bfloat16' else
      'TensorFlow ops (auto: float32 networks).')
  assert trainer.elementwise_message == 'Gated blocks: ' + (
      'fused CPU kernels.' if expected == 'mixed_bfloat16' else
      'TensorFlow ops (float32 networks).')
  assert precision.policy_of(trainer.model) == expected


# Training: loss scaling and resuming across precisions -----------------------


def _train_config(**overrides):
  values = dict(
      train_steps=3, batch_size=16, warmup_steps=1, log_every=1,
      eval_every=3, checkpoint_every=3, num_sample_images=0,
      test_num_samples=1, max_eval_images=16)
  values.update(overrides)
  return configs_util.tiny_train_config(**values)


def _run_step(trainer, images, step):
  strategy = trainer.strategy
  dist = next(
      iter(
          strategy.experimental_distribute_dataset(
              tf.data.Dataset.from_tensors(images))))
  return trainer.train_step(dist, tf.constant(step, tf.int64))


# One replica runs with -m slow: two replicas take the same path plus the
# cross-replica reduction of the overflow flag.
@pytest.mark.parametrize('replicas', [
    pytest.param(1, marks=pytest.mark.slow), 2])
def test_float16_overflow_is_skipped_uncounted_and_a_nan_is_counted(
    tmp_path, replicas):
  strategy = (
      strategy_lib.make_strategy('mirrored', num_cpu_replicas=2)
      if replicas == 2 else tf.distribute.get_strategy())
  trainer = trainer_lib.Trainer(
      configs_util.tiny_model_config(precision='mixed_float16'),
      configs_util.tiny_data_config(),
      _train_config(),
      str(tmp_path),
      strategy=strategy)
  trainer.restore_or_initialize()
  assert trainer.loss_scale.enabled
  good = next(iter(trainer.dataset.train_batches(16, start_step=1)))
  before = [v.numpy().copy() for v in trainer.model.trainable_variables]
  # Overflow: a finite loss whose scaled gradients are not finite.
  trainer.loss_scale.scale.assign(3e38)
  loss, _, applied = _run_step(trainer, good, 1)
  assert np.isfinite(float(loss)) and not bool(applied)
  assert int(trainer.skipped.numpy()) == 0
  assert int(trainer.consecutive_skips.numpy()) == 0
  assert float(trainer.loss_scale.scale.numpy()) == pytest.approx(1.5e38)
  for a, v in zip(before, trainer.model.trainable_variables):
    np.testing.assert_array_equal(a, v.numpy())
  # A real NaN (pixel values outside [0, L) on the second replica's half).
  trainer.loss_scale.scale.assign(2.**10)
  poisoned = tf.concat(
      [good[:8], tf.fill([8, 4, 4, 1], tf.constant(200, tf.uint8))], axis=0)
  loss, _, applied = _run_step(trainer, poisoned, 2)
  assert not np.isfinite(float(loss)) and not bool(applied)
  assert int(trainer.skipped.numpy()) == 1
  assert int(trainer.consecutive_skips.numpy()) == 1
  assert float(trainer.loss_scale.scale.numpy()) == 2.**10
  # A good step applies and counts towards growth.
  _, _, applied = _run_step(trainer, good, 3)
  assert bool(applied) and int(trainer.loss_scale.good_steps.numpy()) == 1
  assert int(trainer.consecutive_skips.numpy()) == 0
  assert any(not np.array_equal(a, v.numpy())
             for a, v in zip(before, trainer.model.trainable_variables))


def test_loss_scale_grows_after_the_interval_and_never_drops_below_one():
  scale = loss_scale_lib.DynamicLossScale(
      enabled=True, initial_scale=2., growth_interval=3)
  yes, no = tf.constant(True), tf.constant(False)
  for _ in range(3):
    scale.update(yes, yes)
  assert float(scale.scale) == 4.
  for _ in range(2):
    assert [bool(b) for b in scale.update(yes, no)] == [False, False]
  assert float(scale.scale) == 1.
  # At S = 1 non-finite gradients are a real failure, not an overflow.
  assert [bool(b) for b in scale.update(yes, no)] == [False, True]
  disabled = loss_scale_lib.DynamicLossScale(enabled=False)
  assert [bool(b) for b in disabled.update(yes, no)] == [False, True]
  assert disabled.scale_loss(tf.constant(3.)) == 3.
  with pytest.raises(ValueError, match='Bad loss scale'):
    loss_scale_lib.DynamicLossScale(enabled=True, factor=1.)


def test_training_resumes_across_precisions(tmp_path):
  workdir = str(tmp_path / 'run')
  data = configs_util.tiny_data_config()
  before = None
  for step, policy in enumerate(
      ('float32', 'mixed_bfloat16', 'mixed_float16', 'float32')):
    trainer = trainer_lib.Trainer(
        configs_util.tiny_model_config(precision=policy), data,
        _train_config(), workdir)
    assert trainer.restore_or_initialize() == step
    assert trainer.precision_message.startswith(f'Precision: {policy} ')
    if before is not None:  # Restored exactly what the last run saved.
      for a, v in zip(before, trainer.model.trainable_variables):
        np.testing.assert_array_equal(a, v.numpy())
    batch = next(iter(trainer.dataset.train_batches(16, start_step=step)))
    _, _, applied = _run_step(trainer, batch, step)
    assert bool(applied)
    trainer.manager.save(checkpoint_number=step + 1)
    before = [v.numpy().copy() for v in trainer.model.trainable_variables]
    # The loss scale is checkpointed in every precision and left alone
    # outside float16.
    assert float(trainer.loss_scale.scale.numpy()) == 2.**15


# Inference and export of a checkpoint under another precision --------------

GOLDEN = os.path.join(os.path.dirname(__file__), 'data', 'v0_1_tiny_workdir')


def test_float32_checkpoint_evaluates_in_low_precision(tmp_path):
  workdir = str(tmp_path / 'run')
  shutil.copytree(GOLDEN, workdir)
  with open(os.path.join(GOLDEN, 'expected.json')) as f:
    expected = json.load(f)
  x = tf.constant(expected['test_images'], tf.int32)
  seed = tf.constant(expected['log_prob_seed'])
  model, _, _ = training.restore_for_inference(
      workdir, precision='mixed_bfloat16')
  assert precision.policy_of(model) == 'mixed_bfloat16'
  bound = model.log_prob(x, seed=seed).numpy()
  # bf16 networks of a trained float32 model: within 0.02 bits/dim.
  tolerance = 0.02 * model.num_dims * np.log(2.)
  np.testing.assert_allclose(bound, expected['log_prob'], atol=tolerance)
  assert not np.allclose(bound, expected['log_prob'], rtol=1e-6, atol=0)
  np.testing.assert_array_equal(model.decode(model.encode(x)), x)
  float32_model, _, _ = training.restore_for_inference(workdir)
  assert precision.policy_of(float32_model) == 'float32'


@pytest.mark.slow
def test_export_precision_is_recorded_and_the_interface_stays_float32(
    tmp_path):
  workdir = str(tmp_path / 'run')
  shutil.copytree(GOLDEN, workdir)
  model, _, _ = training.restore_for_inference(
      workdir, precision='mixed_bfloat16')
  x = tf.zeros([2, 4, 4, 1], tf.uint8)
  path = export.export_saved_model(model, str(tmp_path / 'export'))
  assert export.read_metadata(path)['precision'] == 'mixed_bfloat16'
  served = tf.saved_model.load(path).signatures['serving_default']
  out = served(images=x)
  assert out and all(v.dtype == tf.float32 for v in out.values())
  assert all(np.all(np.isfinite(v)) for v in out.values())
