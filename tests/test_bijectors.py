"""Exactness of every bijector: round trips, brute-force log-dets, modes.

Each case is built in float32 and float64. Round trips defeat TFP's bijector
cache (see `flow_test_util.fresh`), so the inverse really runs.
"""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_flowpp import bijectors as fb
from tfp_flowpp import networks
import flow_test_util as util

tfb = tfp.bijectors

BATCH = 3


def _network(in_shape,
             out_channels,
             dtype,
             context_channels=None,
             mixer='attention',
             seed=0):
  cfg = networks.GatedResNetConfig(
      filters=8, blocks=1, mixer=mixer, heads=2, dropout=0.)
  return networks.FlowppCouplingNetwork(
      in_shape,
      out_channels,
      cfg,
      context_channels=context_channels,
      dtype=dtype,
      rng=np.random.default_rng(seed))


def _mix_logistic(dtype, context=False):
  k = 3
  net = _network((4, 2, 1),
                 2 + 3 * k,
                 dtype,
                 context_channels=3 if context else None)
  return fb.MixLogisticCoupling(net, (4, 2, 2), k)


def _affine(dtype, scale_fn):
  return fb.AffineCoupling(
      _network((4, 2, 1), 2, dtype, mixer='pointwise'), (4, 2, 2),
      scale_fn=scale_fn)


def _additive(dtype):
  return fb.AdditiveCoupling(
      _network((4, 2, 1), 1, dtype, mixer='none'), (4, 2, 2))


def _factor_out(dtype):
  coupling = fb.AffineCoupling(
      _network((4, 1, 1), 2, dtype, mixer='none'), (4, 1, 2))
  inner = tfb.Chain([
      tfb.Invert(fb.StripeSplit((4, 2, 1))),
      coupling,
      fb.StripeSplit((4, 2, 1)),
  ])
  return fb.FactorOut(inner, (4, 2, 2))


def _chain(dtype):
  """squeeze → norm → 1×1 → MixLogistic → swap → unsqueeze (logit space)."""
  k = 2
  net = _network((2, 1, 4), 4 * (2 + 3 * k), dtype)
  squeeze = fb.Squeeze((4, 2, 2))
  return tfb.Chain([
      tfb.Invert(squeeze),
      tfb.Permute([4, 5, 6, 7, 0, 1, 2, 3], axis=-1),
      fb.MixLogisticCoupling(net, (2, 1, 8), k),
      fb.InvertibleConv1x1((2, 1, 8), num_groups=2, seed=1, dtype=dtype),
      fb.ActNorm((2, 1, 8), dtype=dtype),
      squeeze,
  ])


# name -> (factory(dtype), input kind, needs context)
CASES = {
    'mix_logistic': (_mix_logistic, 'normal', False),
    'mix_logistic_context': (lambda d: _mix_logistic(d, True), 'normal', True),
    'affine_exp_tanh': (lambda d: _affine(d, 'exp_tanh'), 'normal', False),
    'affine_sigmoid': (lambda d: _affine(d, 'sigmoid'), 'normal', False),
    'additive': (_additive, 'normal', False),
    'actnorm_per_channel': (lambda d: fb.ActNorm(
        (4, 2, 2), dtype=d), 'normal', False),
    'actnorm_per_element': (lambda d: fb.ActNorm(
        (4, 2, 2), per_element=True, dtype=d), 'normal', False),
    'conv1x1_full': (lambda d: fb.InvertibleConv1x1(
        (4, 2, 2), init='orthogonal', seed=0, dtype=d), 'normal', False),
    'conv1x1_per_half': (lambda d: fb.InvertibleConv1x1(
        (4, 2, 4), num_groups=2, seed=0, dtype=d), 'normal4', False),
    'squeeze': (lambda d: fb.Squeeze((4, 2, 2)), 'normal', False),
    'stripe_split': (lambda d: fb.StripeSplit((4, 2, 2)), 'normal', False),
    'checkerboard_split': (lambda d: fb.CheckerboardSplit(
        (4, 2, 2)), 'normal', False),
    'channel_split': (lambda d: fb.ChannelSplit((4, 2, 2)), 'normal', False),
    'factor_out': (_factor_out, 'normal', False),
    'logit_preprocess':
        (lambda d: fb.LogitPreprocess(256, 0.9), 'pixels', False),
    'chain': (_chain, 'normal', False),
    'chain_with_preprocessing': (
        lambda d: tfb.Chain([_chain(d), fb.LogitPreprocess(256, 0.9)]),
        'pixels', False),
}


def _inputs(kind, dtype, large=False, seed=0):
  rng = np.random.default_rng(seed)
  channels = 4 if kind == 'normal4' else 2
  shape = (BATCH, 4, 2, channels)
  if kind == 'pixels':
    x = rng.uniform(0., 256., shape)
  elif large:
    x = rng.uniform(-20., 20., shape)
  else:
    x = rng.normal(0., 2., shape)
  return tf.constant(x, dtype)


def _context(dtype, seed=1):
  rng = np.random.default_rng(seed)
  return tf.constant(rng.normal(size=(BATCH, 4, 2, 3)), dtype)


def _build(name, dtype, perturbed):
  factory, kind, needs_context = CASES[name]
  bijector = factory(dtype)
  kwargs = {'context': _context(dtype)} if needs_context else {}
  # Run forward once so data-dependent init happens on typical data.
  bijector.forward(_inputs(kind, dtype, seed=5), **kwargs)
  if perturbed:
    util.perturb(bijector, 0.3, seed=2)
  return bijector, kind, kwargs


# The spec bounds round trips in logit space; a chain that starts with the
# pixel → logit preprocessing is compared there (1e-5 in logit space is up to
# 7e-4 in pixel units at the ends of [0, 256], where dx/dy = 71).
_LOGIT_SPACE = {'chain_with_preprocessing': fb.LogitPreprocess(256, 0.9)}


@pytest.mark.parametrize('perturbed', [False, True], ids=['fresh', 'perturbed'])
@pytest.mark.parametrize('large', [False, True], ids=['normal', 'large'])
@pytest.mark.parametrize('name', sorted(CASES))
def test_round_trip_float32(name, large, perturbed):
  bijector, kind, kwargs = _build(name, tf.float32, perturbed)
  x = _inputs(kind, tf.float32, large=large)
  if name in _LOGIT_SPACE:
    to_logit = _LOGIT_SPACE[name].forward
    y = bijector.forward(x, **kwargs)
    x_back = bijector.inverse(util.fresh(y), **kwargs)
    inverse_error = float(
        tf.reduce_max(
            tf.abs(to_logit(util.fresh(x_back)) - to_logit(util.fresh(x)))))
    forward_error = util.round_trip_errors(bijector, x, **kwargs)[1]
  else:
    inverse_error, forward_error = util.round_trip_errors(bijector, x, **kwargs)
  assert inverse_error <= 1e-4, inverse_error
  assert forward_error <= 1e-4, forward_error


@pytest.mark.parametrize('perturbed', [False, True], ids=['fresh', 'perturbed'])
@pytest.mark.parametrize('name', sorted(CASES))
def test_log_det_matches_brute_force(name, perturbed):
  bijector, kind, kwargs = _build(name, tf.float64, perturbed)
  x = _inputs(kind, tf.float64)
  fldj = bijector.forward_log_det_jacobian(x, event_ndims=3, **kwargs)
  fldj = np.broadcast_to(fldj.numpy(), [BATCH])
  expected = util.brute_force_log_det(lambda t: bijector.forward(t, **kwargs),
                                      util.fresh(x))
  assert util.relative_error(fldj, expected) <= 1e-3, (fldj, expected)
  y = bijector.forward(x, **kwargs)
  ildj = bijector.inverse_log_det_jacobian(
      util.fresh(y), event_ndims=3, **kwargs)
  expected_inverse = util.brute_force_log_det(
      lambda t: bijector.inverse(t, **kwargs), util.fresh(y))
  ildj = np.broadcast_to(ildj.numpy(), [BATCH])
  assert util.relative_error(ildj, expected_inverse) <= 1e-3


@pytest.mark.parametrize('name', sorted(CASES))
def test_forward_ldj_is_minus_inverse_ldj(name):
  bijector, kind, kwargs = _build(name, tf.float32, perturbed=True)
  x = _inputs(kind, tf.float32)
  y = bijector.forward(x, **kwargs)
  fldj = bijector.forward_log_det_jacobian(x, event_ndims=3, **kwargs)
  ildj = bijector.inverse_log_det_jacobian(
      util.fresh(y), event_ndims=3, **kwargs)
  np.testing.assert_allclose(
      np.broadcast_to(fldj, [BATCH]),
      -np.broadcast_to(ildj, [BATCH]),
      rtol=1e-4,
      atol=1e-3)


@pytest.mark.parametrize('mode', ['tf_function', 'jit_compile'])
@pytest.mark.parametrize('name', sorted(CASES))
def test_graph_and_xla_match_eager(name, mode):
  bijector, kind, kwargs = _build(name, tf.float32, perturbed=True)
  x = _inputs(kind, tf.float32)

  def run(t):
    y = bijector.forward(t, **kwargs)
    back = bijector.inverse(tf.identity(y), **kwargs)
    fldj = bijector.forward_log_det_jacobian(t, event_ndims=3, **kwargs)
    return y, back, fldj

  eager = run(x)
  compiled = tf.function(run, jit_compile=(mode == 'jit_compile'))(x)
  for a, b in zip(eager, compiled):
    np.testing.assert_allclose(
        np.broadcast_to(a, np.shape(b)), b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('name', [
    n for n in sorted(CASES)
    if n not in ('squeeze', 'stripe_split', 'checkerboard_split',
                 'channel_split', 'logit_preprocess')
])
def test_gradients_reach_every_variable(name):
  bijector, kind, kwargs = _build(name, tf.float32, perturbed=True)
  variables = bijector.trainable_variables
  assert variables, f'{name} exposes no trainable variables'
  x = _inputs(kind, tf.float32)
  with tf.GradientTape() as tape:
    y = bijector.forward(x, **kwargs)
    loss = (
        tf.reduce_sum(tf.square(y)) - tf.reduce_sum(
            bijector.forward_log_det_jacobian(x, event_ndims=3, **kwargs)))
  grads = tape.gradient(loss, variables)
  missing = [v.name for v, g in zip(variables, grads) if g is None]
  assert not missing, missing
  assert all(np.all(np.isfinite(g)) for g in grads)


def test_chain_and_transformed_distribution_track_all_variables():
  coupling = _mix_logistic(tf.float32)
  norm = fb.ActNorm((4, 2, 2))
  chain = tfb.Chain([coupling, norm])
  dist = tfp.distributions.TransformedDistribution(
      tfp.distributions.Sample(tfp.distributions.Normal(0., 1.), [4, 2, 2]),
      tfb.Invert(chain))
  expected = {v.ref() for v in coupling.network.trainable_variables}
  expected |= {norm.log_scale.ref(), norm.shift.ref()}
  for owner in (chain, dist):
    assert {v.ref() for v in owner.trainable_variables} == expected
  x = _inputs('normal', tf.float32)
  with tf.GradientTape() as tape:
    loss = -tf.reduce_mean(dist.log_prob(x))
  grads = tape.gradient(loss, dist.trainable_variables)
  assert all(g is not None for g in grads)


def test_actnorm_data_init_standardises_first_batch():
  x = tf.random.normal([64, 4, 2, 2], mean=3., stddev=5., seed=1)
  for per_element, axes in ((False, (0, 1, 2)), (True, (0,))):
    layer = fb.ActNorm((4, 2, 2), per_element=per_element)
    y = layer.forward(x)
    np.testing.assert_allclose(tf.reduce_mean(y, axes), 0., atol=1e-4)
    np.testing.assert_allclose(tf.math.reduce_std(y, axes), 1., atol=1e-3)
    assert bool(layer.initialized)
    # Later batches do not re-initialise.
    before = layer.log_scale.numpy().copy()
    layer.forward(x * 2.)
    np.testing.assert_array_equal(before, layer.log_scale.numpy())


def test_actnorm_data_init_under_tf_function_and_xla():
  for jit in (False, True):
    layer = fb.ActNorm((4, 2, 2))
    x = tf.random.normal([32, 4, 2, 2], mean=-2., stddev=0.5, seed=3)
    y = tf.function(layer.forward, jit_compile=jit)(x)
    np.testing.assert_allclose(tf.reduce_mean(y, (0, 1, 2)), 0., atol=1e-4)
    assert bool(layer.initialized)


def test_actnorm_under_mirrored_strategy():
  devices = tf.config.list_logical_devices('CPU')[:2]
  assert len(devices) == 2, 'conftest should create two logical CPUs'
  strategy = tf.distribute.MirroredStrategy([d.name for d in devices])
  x = tf.random.normal([16, 4, 2, 2], mean=1., stddev=2., seed=4)
  with strategy.scope():
    layer = fb.ActNorm((4, 2, 2))
  # Initialisation in the cross-replica context sets every replica.
  layer.forward(x)
  values = strategy.experimental_local_results(layer.log_scale)
  np.testing.assert_allclose(values[0], values[1])
  expected = -0.5 * np.log(np.var(x.numpy(), axis=(0, 1, 2)) + 1e-6)
  np.testing.assert_allclose(values[0], expected, rtol=1e-4)

  @tf.function
  def step(batch):
    return strategy.run(layer.forward, args=(batch,))

  dist = strategy.experimental_distribute_dataset(
      tf.data.Dataset.from_tensors(x).unbatch().batch(8))
  out = step(next(iter(dist)))
  assert all(
      np.all(np.isfinite(t)) for t in strategy.experimental_local_results(out))

  # Uninitialised inside strategy.run → clear error, not silent identity.
  with strategy.scope():
    fresh_layer = fb.ActNorm((4, 2, 2))

  @tf.function
  def fresh_step(batch):
    return strategy.run(fresh_layer.forward, args=(batch,))

  with pytest.raises(tf.errors.InvalidArgumentError, match='not initialised'):
    fresh_step(next(iter(dist)))


def test_invertible_conv1x1_log_det_formula():
  layer = fb.InvertibleConv1x1((3, 5, 4), seed=0, init='orthogonal')
  util.perturb(layer, 0.2)
  weight = layer.weight().numpy()[0]
  _, logabsdet = np.linalg.slogdet(weight.astype(np.float64))
  expected = 3 * 5 * logabsdet
  got = layer.forward_log_det_jacobian(tf.zeros([1, 3, 5, 4]), event_ndims=3)
  np.testing.assert_allclose(got, expected, rtol=1e-4)
  assert layer.trainable_variables[0].shape == (1, 4, 4)  # exactly C² params


def test_checkerboard_split_is_true_checkerboard():
  image = np.arange(4 * 4).reshape(1, 4, 4, 1).astype(np.float32)
  paired = fb.CheckerboardSplit((4, 4, 1)).forward(image).numpy()
  half_a, half_b = paired[0, ..., 0], paired[0, ..., 1]
  i, j = np.meshgrid(np.arange(4), np.arange(4), indexing='ij')
  np.testing.assert_array_equal(
      np.sort(half_a.ravel()), np.sort(image[0, ..., 0][(i + j) % 2 == 0]))
  np.testing.assert_array_equal(
      np.sort(half_b.ravel()), np.sort(image[0, ..., 0][(i + j) % 2 == 1]))
  stripe = fb.StripeSplit((4, 4, 1)).forward(image).numpy()
  np.testing.assert_array_equal(stripe[0, ..., 0], image[0, :, 0::2, 0])
  np.testing.assert_array_equal(stripe[0, ..., 1], image[0, :, 1::2, 0])


def test_mix_logistic_coupling_starts_near_identity():
  bijector = _mix_logistic(tf.float32)
  x = _inputs('normal', tf.float32)
  y = bijector.forward(x)
  # Conditioning half untouched; transformed half within the 0.1-scale init.
  np.testing.assert_array_equal(y[..., :1], x[..., :1])
  assert float(tf.reduce_max(tf.abs(y - x))) < 1.5


def test_mix_logistic_log_space_stays_finite_far_in_the_tails():
  bijector = _mix_logistic(tf.float32)
  util.perturb(bijector, 0.3)
  x = tf.constant(
      np.linspace(-1e4, 1e4, BATCH * 16).reshape(BATCH, 4, 2, 2), tf.float32)
  y = bijector.forward(x)
  ldj = bijector.forward_log_det_jacobian(x, event_ndims=3)
  assert np.all(np.isfinite(y)) and np.all(np.isfinite(ldj))


def test_bad_shapes_give_one_line_errors():
  bijector = _mix_logistic(tf.float32)
  with pytest.raises(
      ValueError, match=r'expected inputs of shape \[\.\.\., 4, 2, 2\]'):
    bijector.forward(tf.zeros([2, 4, 4, 2]))
  with pytest.raises(ValueError, match='even C'):
    fb.AffineCoupling(_network((4, 2, 1), 2, tf.float32), (4, 2, 3))
  with pytest.raises(ValueError, match='divisible'):
    fb.Squeeze((3, 4, 1))
  with pytest.raises(ValueError, match='even width'):
    fb.StripeSplit((4, 3, 1))
