"""The discrete image model: normalisation, bits/dim scaling, bounds, latents.

The normalisation test is the one that catches everything: on a 2×2×1 model
with L = 4 levels there are 256 possible images; ``exp`` of the
importance-weighted bound is an unbiased estimate of P(x), so summing it over
every image must give 1 (within Monte-Carlo error) — for any correct log-det,
scaling and dequantizer density, at initialisation and after training.
"""

import itertools
import math
import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_flowpp import config as config_lib
from tfp_flowpp import data as data_lib
from tfp_flowpp import model_builder
from tfp_flowpp.distributions import dequantization
from tfp_flowpp.distributions import discrete_image_flow
from tfp_flowpp.training import config as train_config_lib
from tfp_flowpp.training import optimization

tfb = tfp.bijectors

TINY_LEVELS = 4


def tiny_config(dequantizer='variational', **overrides):
  """The exact-check config: 2×2×1 images, L = 4 (256 possible images)."""
  values = dict(
      image_shape=(2, 2, 1),
      num_levels=TINY_LEVELS,
      flow='checkerboard:4',
      components=4,
      filters=16,
      blocks=1,
      heads=2,
      dropout=0.,
      dequantizer=dequantizer,
      dequantizer_flow='checkerboard:2',
      dequantizer_filters=8,
      dequantizer_blocks=1,
      context_channels=4,
      context_blocks=1,
      seed=3,
      precision='float32')
  values.update(overrides)
  return config_lib.ModelConfig(**values)


def all_images():
  grid = itertools.product(range(TINY_LEVELS), repeat=4)
  return tf.constant(np.array(list(grid), np.int32).reshape(-1, 2, 2, 1))


def tiny_data(n=4096, seed=0):
  """A structured distribution over 2×2 images: smooth blobs with noise."""
  rng = np.random.default_rng(seed)
  base = rng.integers(0, TINY_LEVELS, size=(n, 1, 1, 1))
  noise = rng.choice([-1, 0, 0, 0, 1], size=(n, 2, 2, 1))
  return tf.constant(np.clip(base + noise, 0, TINY_LEVELS - 1), tf.int32)


def total_probability(model, k=512, seed=7):
  images = all_images()
  log_p = model.importance_weighted_log_prob(
      images, k, seed=tf.constant([seed, 1]), images_per_pass=256 * 128)
  return float(tf.reduce_sum(tf.exp(tf.cast(log_p, tf.float64))))


def train(model, images, steps, batch=64, lr=3e-3, seed=0):
  optimizer = optimization.make_optimizer(
      train_config_lib.TrainConfig(
          learning_rate=lr, warmup_steps=10, ema_decay=0.))
  variables = model.trainable_variables
  optimizer.build(variables)

  @tf.function
  def step(x, i):
    with tf.GradientTape() as tape:
      loss = -tf.reduce_mean(
          model.log_prob(x, seed=tf.stack([seed, i]), training=True))
    optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
    return loss

  rng = np.random.default_rng(seed)
  losses = []
  for i in range(steps):
    idx = rng.integers(0, int(images.shape[0]), batch)
    losses.append(float(step(tf.gather(images, idx), tf.constant(i))))
  return losses


# (dequantizer, preprocessing): 'exact' is preprocess_alpha = 1 in float64,
# whose continuous density lives exactly on (0, L)^D, so Σ_x P(x) = 1;
# 'official' is alpha = 0.9 in float32, whose density leaks a little mass
# outside [0, L]^D, so Σ_x P(x) equals that in-range mass (estimated by
# sampling the continuous flow) instead.
VARIANTS = {
    'variational-exact':
        dict(dequantizer='variational', preprocess_alpha=1., dtype='float64'),
    'uniform-exact':
        dict(dequantizer='uniform', preprocess_alpha=1., dtype='float64'),
    'variational-official':
        dict(dequantizer='variational'),
    'uniform-official':
        dict(dequantizer='uniform'),
}


def expected_total(model, exact):
  if exact:
    return 1.
  return model.probability_mass_in_range(100_000, seed=tf.constant([8, 8]))


# The 'official' variants (a 100k-sample in-range mass each) and
# 'uniform-exact' (the multi-scale tests sum uniform-dequantized models to
# one too) run with -m slow.
@pytest.fixture(scope='module', params=[
    name if name == 'variational-exact'
    else pytest.param(name, marks=pytest.mark.slow)
    for name in sorted(VARIANTS)])
def trained_tiny(request):
  model = model_builder.build_model(tiny_config(**VARIANTS[request.param]))
  exact = request.param.endswith('exact')
  data = tiny_data()
  model.initialize(data[:256], seed=tf.constant([0, 0]))
  initial = (total_probability(model, seed=11), expected_total(model, exact))
  losses = train(model, data, steps=300)
  return request.param, model, initial, losses, data


def test_probabilities_sum_to_one_at_initialisation(trained_tiny):
  _, _, (total, expected), _, _ = trained_tiny
  assert abs(total - expected) < 0.03 * expected, (total, expected)


def test_probabilities_sum_to_one_after_training(trained_tiny):
  kind, model, _, losses, data = trained_tiny
  # Training must have changed the model for this to mean anything.
  assert np.mean(losses[-30:]) < np.mean(losses[:30]) - 0.25, losses[::50]
  total = total_probability(model, seed=13)
  expected = expected_total(model, kind.endswith('exact'))
  assert abs(total - expected) < 0.03 * expected, (kind, total, expected)
  # ... and the mass concentrates on the data's support.
  probs = np.exp(
      model.importance_weighted_log_prob(
          data[:512], 64, seed=tf.constant([5, 5])).numpy())
  assert probs.mean() > 1.5 / 256


# Multi-scale structure on the 2×2 model (exact preprocessing, uniform
# dequantization): squeeze to 1×1×4, factor half of it out (its density is
# the prior's), and Glow's learned split prior (a coupling of the factored
# half on the kept half).
STRUCTURES = {
    'squeeze': dict(flow='checkerboard:2 squeeze channel:2'),
    'factor_out': dict(flow='checkerboard:2 squeeze channel:2 factor_out '
                       'channel:1'),
    'split_prior': dict(flow='checkerboard:2 squeeze channel:2 factor_out '
                        'channel:1', split_prior=True),
}


@pytest.mark.parametrize('structure', sorted(STRUCTURES))
def test_probabilities_sum_to_one_with_multi_scale_structure(structure):
  model = model_builder.build_model(
      tiny_config('uniform', preprocess_alpha=1., dtype='float64',
                  **STRUCTURES[structure]))
  data = tiny_data()
  model.initialize(data[:256], seed=tf.constant([0, 0]))
  losses = train(model, data, steps=80)
  assert np.mean(losses[-10:]) < np.mean(losses[:10]) - 0.2, losses[::10]
  total = total_probability(model, k=64, seed=17)
  assert abs(total - 1.) < 0.03, (structure, total)


def test_official_preprocessing_leaks_mass_the_exact_one_does_not():
  official = model_builder.build_model(tiny_config('uniform'))
  exact = model_builder.build_model(
      tiny_config('uniform', preprocess_alpha=1., dtype='float64'))
  for model in (official, exact):
    model.initialize(tiny_data()[:256], seed=tf.constant([0, 0]))
  assert official.probability_mass_in_range(20_000, seed=[1, 1]) < 0.97
  assert exact.probability_mass_in_range(20_000, seed=[1, 1]) == 1.


def test_sigmoid_squash_gives_heavy_tailed_importance_weights():
  """Why the default squash is Φ: the official sigmoid's weights degenerate."""
  ess = {}
  for squash in ('normal_cdf', 'sigmoid'):
    model = model_builder.build_model(tiny_config(dequantizer_squash=squash))
    model.initialize(tiny_data()[:256], seed=tf.constant([0, 0]))
    x = tf.repeat(all_images()[37:38], 4000, axis=0)
    bound = model.log_prob(x, seed=[1, 2]).numpy()
    w = np.exp(bound - bound.max())
    ess[squash] = w.sum()**2 / (w**2).sum() / len(w)
  assert ess['normal_cdf'] > 0.5 > 0.25 > ess['sigmoid'], ess


def test_total_probability_catches_a_wrong_log_det():
  """The normalisation check is sensitive: a log-det off by 0.5 nats fails."""
  model = model_builder.build_model(
      tiny_config('uniform', preprocess_alpha=1., dtype='float64'))

  class OffByHalfNat(tfb.Bijector):
    """Identity map that (wrongly) claims a log-det of 0.5 nats."""

    def __init__(self):
      super().__init__(forward_min_event_ndims=3, name='off_by_half_nat')

    def _forward(self, x):
      return x

    def _inverse(self, y):
      return y

    def _forward_log_det_jacobian(self, x):
      return tf.constant(0.5, x.dtype)

  broken = discrete_image_flow.DiscreteImageFlow(
      tfb.Chain([OffByHalfNat(), model.bijector]),
      model.dequantizer, (2, 2, 1),
      TINY_LEVELS,
      dtype=tf.float64)
  assert abs(total_probability(model, k=64) - 1.) < 0.03
  broken_total = total_probability(broken, k=64)
  assert abs(broken_total - math.exp(0.5)) < 0.05 * math.exp(0.5)


def _uniform_model(levels, shape, dequantizer):
  # p(y) = 1/L^D on [0, L]^D: y ↦ Φ⁻¹(y / L) maps it to N(0, I) exactly.
  flow = tfb.Chain([tfb.Invert(tfb.NormalCDF()), tfb.Scale(1. / levels)])
  return discrete_image_flow.DiscreteImageFlow(flow, dequantizer, shape, levels)


@pytest.mark.parametrize('levels', [4, 17, 256])
def test_uniform_model_has_exactly_log2_levels_bits_per_dim(levels):
  shape = (3, 5, 2)
  model = _uniform_model(levels, shape,
                         dequantization.UniformDequantizer(shape))
  x = tf.random.uniform([32, *shape], 0, levels, tf.int32, seed=1)
  bpd = model.bits_per_dim(x, seed=tf.constant([1, 2]))
  np.testing.assert_allclose(bpd, math.log2(levels), rtol=2e-5)
  iw = model.bits_per_dim(x, num_samples=8, seed=tf.constant([3, 4]))
  np.testing.assert_allclose(iw, math.log2(levels), rtol=2e-5)


def test_identity_flow_bits_per_dim_is_the_preprocessing_log_det():
  """With only the logit preprocessing, bpd is the analytic change of variables."""
  levels, shape = 256, (2, 2, 1)
  config = tiny_config('uniform', num_levels=levels)
  preprocess = model_builder._Builder(config).flow_bijector().bijectors[-1]  # pylint: disable=protected-access
  model = discrete_image_flow.DiscreteImageFlow(
      preprocess, dequantization.UniformDequantizer(shape), shape, levels)
  x = tf.constant(np.full([1, *shape], 100), tf.int32)
  u = tf.random.stateless_uniform([1, *shape], seed=[4, 2])
  y = tf.cast(x, tf.float32) + u
  p = 0.9 * y / levels + 0.05
  z = np.log(p) - np.log1p(-p)
  expected = (-0.5 * z**2 - 0.5 * math.log(2 * math.pi) +
              math.log(0.9 / levels) - np.log(p) - np.log1p(-p)).sum()
  got = model.log_prob(x, seed=tf.constant([4, 2]))
  np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_importance_weighting_tightens_the_bound(trained_tiny):
  """E[IW_k] grows with k: measurably from k = 1 to 8, and 8 → 64 up to noise.

  Once IW_8 has converged (the 'exact' variational model: IW_8 and IW_64
  agree to 0.001 nats), IW_64 − IW_8 is pure Monte Carlo noise, so that
  step is checked against the noise of the means, not as a strict order.
  """
  _, model, _, _, data = trained_tiny
  x = data[:512]
  bounds = {}
  for k in (1, 8, 64):
    bounds[k] = model.importance_weighted_log_prob(
        x, k, seed=tf.constant([k, 9]), images_per_pass=512 * 64).numpy()
  single = model.log_prob(x, seed=tf.constant([1, 9])).numpy()
  # Standard error of a 512-image mean of the single-sample bound: its
  # per-image spread around the (nearly exact) IW_64 value.
  se = float(np.std(single - bounds[64])) / math.sqrt(len(single))
  means = {k: float(b.mean()) for k, b in bounds.items()}
  # k = 1 through the IW path is the single-sample bound (other noise).
  assert abs(means[1] - single.mean()) < 4 * math.sqrt(2) * se, (se, means)
  assert means[8] - single.mean() > 3 * se, (single.mean(), se, means)
  assert means[64] > means[8] - 3 * se / math.sqrt(8), (se, means)


@pytest.mark.slow
def test_importance_weighted_bound_is_batched_in_bounded_chunks():
  model = model_builder.build_model(tiny_config())
  x = all_images()[::37]  # 7 images
  model.initialize(all_images(), seed=tf.constant([0, 0]))
  seed = tf.constant([1, 1])
  k, per_pass = 40, 7 * 3  # 3 draws per pass, the last pass partial.
  got = model.importance_weighted_log_prob(
      x, k, seed=seed, images_per_pass=per_pass)
  # The same draws by hand: pass i uses fold_in(seed, i) on 3 tiled copies.
  bounds = []
  for i in range(math.ceil(k / 3)):
    chunk_seed = tf.random.experimental.stateless_fold_in(seed, i)
    bounds.append(
        tf.reshape(
            model._bound(  # pylint: disable=protected-access
                tf.cast(tf.tile(x, [3, 1, 1, 1]), tf.float32), chunk_seed,
                False),
            [3, -1]))
  bounds = tf.concat(bounds, axis=0)[:k]
  expected = tf.reduce_logsumexp(bounds, axis=0) - math.log(k)
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
  # A large k runs in constant memory: 1000 draws, 175 images per pass.
  big = model.importance_weighted_log_prob(
      x, 1000, seed=seed, images_per_pass=7 * 25)
  assert np.all(np.isfinite(big))
  # k given as a tensor (as in the exported signature) works too.
  same = model.importance_weighted_log_prob(
      x, tf.constant(k), seed=seed, images_per_pass=per_pass)
  np.testing.assert_allclose(same, got, rtol=1e-6)


def test_encode_decode_round_trip():
  model = model_builder.build_model(
      tiny_config(
          image_shape=(4, 4, 1),
          num_levels=17,
          flow='stripe:2 squeeze channel:2',
          dequantizer_flow='stripe:2'))
  x = tf.random.uniform([16, 4, 4, 1], 0, 17, tf.int32, seed=3)
  model.initialize(x)
  z = model.encode(x)
  np.testing.assert_array_equal(model.decode(tf.identity(z)), x)
  y = tf.random.uniform([16, 4, 4, 1], 0., 17., seed=4)
  back = model.decode_continuous(tf.identity(model.encode_continuous(y)))
  np.testing.assert_allclose(back, y, atol=1e-4)
  pictures = model.interpolate(x[:2], x[2:4], num_steps=5)
  assert pictures.shape == (2, 5, 4, 4, 1)
  np.testing.assert_array_equal(pictures[:, 0], x[:2])
  np.testing.assert_array_equal(pictures[:, -1], x[2:4])


@pytest.mark.parametrize('temperature', [1.0, 0.7])
def test_samples_are_in_range_and_score_finitely(trained_tiny, temperature):
  _, model, _, _, _ = trained_tiny
  z = model.sample_latents(256, seed=[1, 2], temperature=temperature)
  assert np.all(np.isfinite(model.decode_continuous(z)))
  samples = model.sample(256, seed=[1, 2], temperature=temperature)
  assert samples.dtype == tf.int32
  assert int(tf.reduce_min(samples)) >= 0
  assert int(tf.reduce_max(samples)) < TINY_LEVELS
  assert np.all(np.isfinite(model.log_prob(samples, seed=[3, 4])))
  again = model.sample(256, seed=[1, 2], temperature=temperature)
  np.testing.assert_array_equal(samples, again)


def test_no_nan_in_bound_gradient_or_samples_at_extremes():
  model = model_builder.build_model(
      tiny_config(
          image_shape=(4, 4, 1),
          num_levels=256,
          flow='stripe:2 squeeze channel:2',
          dequantizer_flow='stripe:2'))
  extremes = tf.constant(
      np.stack([
          np.zeros((4, 4, 1)),
          np.full((4, 4, 1), 255),
          np.indices((4, 4))[0][..., None] * 85 % 256,
      ]), tf.int32)
  model.initialize(tf.random.uniform([64, 4, 4, 1], 0, 256, tf.int32, seed=1))
  with tf.GradientTape() as tape:
    bound = model.log_prob(extremes, seed=[1, 1], training=True)
  grads = tape.gradient(bound, model.trainable_variables)
  assert np.all(np.isfinite(bound))
  assert all(np.all(np.isfinite(g)) for g in grads)
  for temperature in (1.0, 0.7):
    z = model.sample_latents(64, seed=[2, 2], temperature=temperature)
    assert np.all(np.isfinite(model.decode_continuous(z)))
    samples = model.sample(64, seed=[2, 2], temperature=temperature)
    assert samples.dtype == tf.int32
    assert 0 <= int(tf.reduce_min(samples))
    assert int(tf.reduce_max(samples)) < 256


def test_dropout_masks_are_a_function_of_the_seed_and_the_layer():
  """Stateless dropout: the same seed gives the same bound, eager or traced."""
  from tfp_flowpp.networks import blocks  # pylint: disable=g-import-not-at-top
  model = model_builder.build_model(
      tiny_config(image_shape=(4, 4, 1), num_levels=17, dropout=0.3,
                  flow='stripe:2', dequantizer_flow='stripe:1'))
  layers = [m for m in model.submodules if hasattr(m, 'dropout_stream')]
  assert sorted(m.dropout_stream for m in layers) == list(range(len(layers)))
  assert blocks.assign_dropout_streams(model) == len(layers) >= 4
  x = tf.random.uniform([8, 4, 4, 1], 0, 17, tf.int32, seed=1)
  seed = tf.constant([3, 4])
  bound = lambda s, training=True: model.log_prob(
      x, seed=s, training=training).numpy()
  first = bound(seed)
  np.testing.assert_array_equal(first, bound(seed))
  traced = tf.function(lambda s: model.log_prob(x, seed=s, training=True))
  np.testing.assert_allclose(first, traced(seed), rtol=1e-6)
  assert not np.allclose(first, bound(tf.constant([3, 5])))
  assert not np.allclose(first, bound(seed, training=False))


@pytest.mark.parametrize('dtype', [tf.float32, tf.bfloat16])
@pytest.mark.parametrize('rate', [0.2, 0.5])
def test_dropout_keeps_one_minus_rate_unbiased_and_seeded(rate, dtype):
  """16-bit draws: keep fraction 1 − rate, E[y] = x, masks set by the seed."""
  from tfp_flowpp.networks import blocks  # pylint: disable=g-import-not-at-top
  x = tf.ones([5, 7, 9, 33], dtype)  # Odd size: the last 16-bit half unused.
  seed = tf.constant([3, 4])
  y = blocks._dropout(x, rate, seed, stream=2)  # pylint: disable=protected-access
  assert y.dtype == dtype and y.shape == x.shape
  y = y.numpy().astype(np.float64)
  kept = y != 0
  n = kept.size
  # Binomial: 5 standard deviations.
  assert abs(kept.mean() - (1 - rate)) < 5 * np.sqrt(rate * (1 - rate) / n)
  np.testing.assert_allclose(y[kept], 1 / (1 - rate), rtol=1e-2)
  np.testing.assert_array_equal(
      y, blocks._dropout(x, rate, seed, stream=2).numpy().astype(np.float64))  # pylint: disable=protected-access
  other = blocks._dropout(x, rate, seed, stream=3).numpy() != 0  # pylint: disable=protected-access
  # Independent masks disagree with probability 2·rate·(1 − rate) >= 0.32.
  assert (other != kept).mean() > 0.25
  # Neighbouring elements (the two halves of one 32-bit draw) independent.
  flat = kept.reshape(-1)[:n // 2 * 2].reshape(-1, 2)
  both = (flat[:, 0] & flat[:, 1]).mean()
  assert abs(both - (1 - rate)**2) < 5 * np.sqrt((1 - rate)**2 / flat.shape[0])


@pytest.mark.parametrize('bad', [np.nan, np.inf, -np.inf])
def test_non_finite_decoded_values_raise_instead_of_becoming_pixels(bad):
  """NaN would cast to -2**31; no public path returns such a pixel."""
  model = discrete_image_flow.DiscreteImageFlow(
      tfb.Shift(tf.Variable(0.)), dequantization.UniformDequantizer((2, 2, 1)),
      (2, 2, 1), num_levels=4)
  z = tf.constant([[[[0.5], [1.5]], [[-3.], [9.]]]])
  np.testing.assert_array_equal(model.decode(z)[0, ..., 0], [[0, 1], [0, 3]])
  poisoned = tf.tensor_scatter_nd_update(z, [[0, 1, 0, 0]], [bad])
  message = 'decoded values are not finite'
  with pytest.raises(tf.errors.InvalidArgumentError, match=message):
    model.decode(poisoned)
  with pytest.raises(tf.errors.InvalidArgumentError, match=message):
    tf.function(model.decode)(poisoned)
  with pytest.raises(tf.errors.InvalidArgumentError, match=message):
    model.quantize(poisoned)
  # Sampling and interpolation decode through the same check.
  model.bijector.shift.assign(bad)  # decode_continuous(z) = z - shift.
  with pytest.raises(tf.errors.InvalidArgumentError, match=message):
    model.sample(3, seed=[1, 2])
  with pytest.raises(tf.errors.InvalidArgumentError, match=message):
    model.interpolate(tf.zeros([1, 2, 2, 1]), tf.ones([1, 2, 2, 1]))


def test_bad_inputs_give_clear_errors():
  model = model_builder.build_model(tiny_config())
  with pytest.raises(
      ValueError, match=r'expected images of shape \[\.\.\., 2, 2, 1\]'):
    model.log_prob(tf.zeros([3, 4, 4, 1], tf.int32))
  with pytest.raises(TypeError, match='integer'):
    model.log_prob(tf.zeros([3, 2, 2, 1], tf.bool))
  strict = model_builder.build_model(tiny_config(), validate_args=True)
  with pytest.raises(tf.errors.InvalidArgumentError, match='must be < 4'):
    strict.log_prob(tf.fill([1, 2, 2, 1], 4))
  with pytest.raises(tf.errors.InvalidArgumentError, match='integers'):
    strict.log_prob(tf.fill([1, 2, 2, 1], 1.5))
  with pytest.raises(ValueError, match='Bad flow token'):
    tiny_config(flow='stripe:0')
  with pytest.raises(ValueError, match='one split kind'):
    tiny_config(dequantizer_flow='stripe:1 squeeze checkerboard:1')


def test_model_is_a_tfp_distribution_with_the_continuous_flow_attached():
  model = model_builder.build_model(tiny_config())
  assert model.event_shape == (2, 2, 1)
  assert model.batch_shape == ()
  assert model.dtype == tf.int32
  assert model.flow.event_shape == (2, 2, 1)
  assert model.flow.bijector.bijector is model.bijector
  flow_vars = {v.ref() for v in model.flow.trainable_variables}
  dequantizer_vars = {v.ref() for v in model.dequantizer.trainable_variables}
  assert flow_vars and dequantizer_vars and not flow_vars & dequantizer_vars
  assert {v.ref() for v in model.trainable_variables} == (
      flow_vars | dequantizer_vars)


SMALL_CONFIGS = ('quickstart', 'tiny', 'fashion_mnist_flowpp',
                 'fashion_mnist_flowpp_affine',
                 'fashion_mnist_flowpp_no_attention',
                 'fashion_mnist_flowpp_uniform_dequant', 'fashion_mnist_glow')


@pytest.mark.parametrize('name', SMALL_CONFIGS)
def test_small_configs_take_a_training_step(name):
  import flowpp_flags  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  values = flags.FlagValues()
  flowpp_flags.define_config_flags(values)
  flowpp_flags.parse_flags(['test', f'--flagfile={root}/configs/{name}.flags'],
                           values)
  data_config = flowpp_flags.data_config(values)
  try:
    dataset = data_lib.load_dataset(data_config)
  except data_lib.DataError as e:
    pytest.skip(f'data not available offline: {e}')
  model = model_builder.build_model(
      flowpp_flags.model_config(values, dataset.image_shape,
                                dataset.num_levels))
  batch = next(iter(dataset.train_batches(16)))
  model.initialize(batch, seed=[0, 0])
  optimizer = optimization.make_optimizer(flowpp_flags.train_config(values))
  variables = model.trainable_variables
  optimizer.build(variables)
  before = [v.numpy().copy() for v in variables]
  with tf.GradientTape() as tape:
    loss = -tf.reduce_mean(model.log_prob(batch, seed=[1, 1], training=True))
  grads = tape.gradient(loss, variables)
  assert all(g is not None and np.all(np.isfinite(g)) for g in grads)
  optimizer.apply_gradients(zip(grads, variables))
  assert np.isfinite(float(loss))
  # Every variable with a non-zero gradient moved. (Only Glow's zero-initialised
  # output convs block gradients to earlier layers at the first step.)
  moving = [np.any(g.numpy() != 0) for g in grads]
  changed = [
      not np.array_equal(b, v.numpy()) for b, v in zip(before, variables)
  ]
  assert moving == changed
  assert sum(moving) > (
      len(variables) // 2 if 'glow' in name else len(variables) - 1)


def test_gradients_stay_finite_after_training(trained_tiny):
  _, model, _, _, _ = trained_tiny
  with tf.GradientTape() as tape:
    bound = model.log_prob(all_images(), seed=[9, 9], training=True)
    loss = -tf.reduce_mean(bound)
  grads = tape.gradient(loss, model.trainable_variables)
  assert np.all(np.isfinite(bound))
  assert all(g is not None and np.all(np.isfinite(g)) for g in grads)
