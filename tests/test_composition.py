"""Composing the continuous flow with other TFP distributions and bijectors.

`DiscreteImageFlow.flow` is a plain ``tfd.TransformedDistribution(N(0, I),
tfb.Invert(bijector))`` over continuous images in ``[0, L]^D``, so it plugs
into the rest of TensorFlow Probability unchanged. Each test below is a short
usage example of one composition:

* the flow as the prior term of a ``tfd.JointDistribution*`` (noisy
  observations, a class label, MAP denoising through ``experimental_pin``);
* ``tfd.Sample`` / ``tfd.Independent`` / ``tfd.BatchBroadcast`` (several
  images as one event), a batch of flows at different temperatures,
  ``tfd.MixtureSameFamily`` over that batch and ``tfd.Mixture`` of two models;
* a ``tfb.MaskedAutoregressiveFlow`` (MAF) — or its inverse, an IAF —
  stacked on the flow's latent as a learned prior.

Every value is checked against an independent computation: the change of
variables written out by hand, ``log N(flow(y); 0, T²I) + log|det ∂flow/∂y|``
(never through `TransformedDistribution`), plus closed-form likelihood terms.
"""

import math

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import configs_util
from tfp_flowpp import model_builder

tfb = tfp.bijectors
tfd = tfp.distributions

LEVELS = 16
SHAPE = (4, 4, 1)
D = int(np.prod(SHAPE))
ALPHA = 0.9  # ModelConfig.preprocess_alpha default.
# The preprocessing x -> logit(a·x/L + (1 − a)/2) maps R back onto this
# closed interval (its end points are reached when float32 sigmoid saturates).
LOW = -(1. - ALPHA) / 2. * LEVELS / ALPHA
HIGH = (1. + ALPHA) / 2. * LEVELS / ALPHA
BATCH = 8
LOG_2PI = math.log(2. * math.pi)


def _config(seed):
  """configs/tiny.flags with a squeeze level and a checkerboard dequantizer."""
  return configs_util.tiny_model_config(
      image_shape=SHAPE, num_levels=LEVELS, flow='stripe:2 squeeze channel:2',
      dequantizer_flow='checkerboard:2', seed=seed)


@pytest.fixture(scope='module')
def discrete_images():
  return np.random.default_rng(0).integers(0, LEVELS, (BATCH,) + SHAPE)


@pytest.fixture(scope='module')
def images(discrete_images):
  """Dequantized images ``x + u``, u ~ U[0, 1): points of [0, L]^D."""
  u = np.random.default_rng(1).uniform(size=discrete_images.shape)
  return (discrete_images + u).astype(np.float32)


def _build(seed, discrete_images):
  model = model_builder.build_model(_config(seed))
  model.initialize(tf.constant(discrete_images, tf.int32), seed=[seed, 7])
  return model


@pytest.fixture(scope='module')
def model(discrete_images):
  return _build(0, discrete_images)


@pytest.fixture(scope='module')
def other_model(discrete_images):
  return _build(1, discrete_images)


# Independent reference computations -----------------------------------------


def _reference_log_prob(model, y, temperature=1.):
  """log p(y) by the change of variables, bypassing `TransformedDistribution`.

  ``log N(z; 0, T²I) + log|det ∂z/∂y|`` with ``z = model.bijector.forward(y)``
  and the Gaussian density written out; differentiable (a TF tensor).
  """
  y = tf.constant(y, model.float_dtype)  # A new tensor: no cache sharing.
  z = model.bijector.forward(y)
  log_det = model.bijector.forward_log_det_jacobian(y, event_ndims=3)
  t = tf.constant(temperature, model.float_dtype)
  log_base = tf.reduce_sum(-0.5 * tf.square(z / t) - tf.math.log(t),
                           axis=[-3, -2, -1]) - 0.5 * D * LOG_2PI
  return log_base + log_det


def _normal_log_prob(x, loc, scale):
  """Σ log N(x; loc, scale²) over the last three axes, in NumPy float64."""
  x, loc = np.float64(x), np.float64(loc)
  return np.sum(-0.5 * ((x - loc) / scale)**2 - np.log(scale) - 0.5 * LOG_2PI,
                axis=(-3, -2, -1))


def _assert_images(samples, leading_shape):
  samples = np.asarray(samples)
  assert samples.shape == tuple(leading_shape) + SHAPE
  assert np.all(np.isfinite(samples))
  assert np.all(samples >= LOW) and np.all(samples <= HIGH)


def _made(seed, hidden=32):
  """MADE for a MAF/IAF on the flattened D-dim latent, near the identity.

  A small initial scale (as in Kingma et al. 2016 for IAF) makes the stacked
  prior start out as the flow's own N(0, I) prior, so its samples stay well
  inside the float32 range of the logit preprocessing.
  """
  return tfb.AutoregressiveNetwork(
      params=2, event_shape=[D], hidden_units=[hidden], activation='tanh',
      kernel_initializer=tf.keras.initializers.RandomNormal(
          stddev=0.05, seed=seed))


def _latent_prior_flow(model, latent_bijector):
  """``TransformedDistribution(N(0, I_D), flow⁻¹ ∘ reshape ∘ latent_bijector)``.

  Sampling draws ``u ~ N(0, I_D)``, maps it through ``latent_bijector`` to a
  flat latent, reshapes it to the image shape and decodes it with the flow.
  """
  reshape = tfb.Reshape(event_shape_out=SHAPE, event_shape_in=(D,))
  return tfd.TransformedDistribution(
      tfd.Sample(tfd.Normal(0., 1.), D),
      tfb.Chain([tfb.Invert(model.bijector), reshape, latent_bijector]))


def test_flow_is_the_change_of_variables_density(model, images):
  """``model.flow`` is an ordinary TFP distribution over continuous images."""
  flow = model.flow
  # (`tfd.TransformedDistribution(...)` returns a private base class unless
  # every part is a CompositeTensor, so no isinstance check against it.)
  assert isinstance(flow, tfd.Distribution)
  assert flow.distribution is model.prior
  assert flow.bijector.bijector is model.bijector  # tfb.Invert(bijector).
  assert flow.batch_shape == [] and flow.event_shape == SHAPE
  np.testing.assert_allclose(flow.log_prob(images),
                             _reference_log_prob(model, images), rtol=1e-5)


# JointDistribution -----------------------------------------------------------


def _noisy_joint(model, sigma):
  """Prior over clean images, Gaussian likelihood of a noisy observation."""
  return tfd.JointDistributionNamed(dict(
      image=model.flow,
      obs=lambda image: tfd.Independent(tfd.Normal(image, sigma), 3)))


def test_joint_named_log_prob_is_prior_plus_likelihood(model, images):
  """The flow as the prior term of a `tfd.JointDistributionNamed`."""
  sigma = 0.5
  joint = _noisy_joint(model, sigma)
  obs = images + np.random.default_rng(2).normal(
      0., sigma, images.shape).astype(np.float32)
  expected = (_reference_log_prob(model, images).numpy() +
              _normal_log_prob(obs, images, sigma))
  np.testing.assert_allclose(joint.log_prob(image=images, obs=obs), expected,
                             rtol=1e-5)


def test_joint_named_sample(model):
  """Ancestral sampling: a flow image, then noise around it."""
  sigma = 0.5
  joint = _noisy_joint(model, sigma)
  sample = joint.sample(3, seed=[4, 5])
  assert set(sample) == {'image', 'obs'}
  _assert_images(sample['image'], [3])
  assert sample['obs'].shape == (3,) + SHAPE
  residual = (sample['obs'] - sample['image']).numpy()
  assert 0.6 * sigma < residual.std() < 1.4 * sigma  # 48 draws.
  expected = (_reference_log_prob(model, sample['image'].numpy()).numpy() +
              _normal_log_prob(sample['obs'], sample['image'], sigma))
  np.testing.assert_allclose(joint.log_prob(sample), expected, rtol=1e-4)


def test_joint_gradients_reach_flow_and_likelihood_variables(model, images):
  """Fitting the joint trains the flow and a learned noise scale together."""
  log_sigma = tf.Variable(math.log(0.5))
  joint = tfd.JointDistributionNamed(dict(
      image=model.flow,
      obs=lambda image: tfd.Independent(
          tfd.Normal(image, tf.exp(log_sigma)), 3)))
  obs = images + np.random.default_rng(3).normal(
      0., 0.3, images.shape).astype(np.float32)
  flow_vars = list(model.flow.trainable_variables)
  dequantizer_vars = list(model.dequantizer.trainable_variables)
  assert flow_vars and dequantizer_vars
  with tf.GradientTape() as tape:
    loss = tf.reduce_sum(joint.log_prob(image=images, obs=obs))
  grads = tape.gradient(loss, flow_vars + [log_sigma] + dequantizer_vars)
  flow_grads = grads[:len(flow_vars)]
  sigma_grad = grads[len(flow_vars)]
  # The continuous flow does not involve the dequantizer q(u|x).
  assert all(g is None for g in grads[len(flow_vars) + 1:])

  with tf.GradientTape() as tape:
    reference = tf.reduce_sum(_reference_log_prob(model, images))
  reference_grads = tape.gradient(reference, flow_vars)
  for v, g, ref in zip(flow_vars, flow_grads, reference_grads):
    assert g is not None, v.name
    assert np.all(np.isfinite(g)), v.name
    scale = max(1., float(np.max(np.abs(ref))))
    np.testing.assert_allclose(g, ref, rtol=1e-3, atol=1e-3 * scale,
                               err_msg=v.name)
  assert sum(float(tf.reduce_sum(tf.abs(g))) for g in flow_grads) > 0.
  # d/dlogσ Σ log N(obs; image, σ²) = Σ ((obs − image)² / σ² − 1).
  expected = np.sum((np.float64(obs) - images)**2 / 0.25 - 1.)
  np.testing.assert_allclose(sigma_grad, expected, rtol=1e-4)


def test_joint_coroutine_with_class_label(model, images):
  """A label depending on the image: ``p(image) p(bright | image)``."""
  def generative_model():
    image = yield tfd.JointDistributionCoroutine.Root(model.flow)
    mean = tf.reduce_mean(image, axis=[-3, -2, -1])
    yield tfd.Bernoulli(logits=mean - LEVELS / 2., dtype=tf.float32,
                        name='bright')

  joint = tfd.JointDistributionCoroutine(generative_model)
  labels = np.array([1., 0.] * (BATCH // 2), np.float32)
  logits = np.float64(images).mean(axis=(1, 2, 3)) - LEVELS / 2.
  log_lik = labels * -np.logaddexp(0., -logits) + (1. - labels) * (
      -np.logaddexp(0., logits))
  expected = _reference_log_prob(model, images).numpy() + log_lik
  np.testing.assert_allclose(joint.log_prob([images, labels]), expected,
                             rtol=1e-5)
  image, label = joint.sample(4, seed=[6, 7])
  _assert_images(image, [4])
  assert label.shape == (4,) and set(np.unique(label)) <= {0., 1.}


def test_pinned_joint_map_denoising(model, images):
  """Posterior over the clean image given a noisy one (MAP by gradients)."""
  sigma = 1.
  noisy = images[:2] + np.random.default_rng(4).normal(
      0., sigma, images[:2].shape).astype(np.float32)
  posterior = _noisy_joint(model, sigma).experimental_pin(obs=noisy)
  start = np.clip(noisy, 0.5, LEVELS - 0.5)
  expected = (_reference_log_prob(model, start).numpy() +
              _normal_log_prob(noisy, start, sigma))
  np.testing.assert_allclose(posterior.unnormalized_log_prob(image=start),
                             expected, rtol=1e-5)

  image = tf.Variable(start)
  optimizer = tf.keras.optimizers.Adam(0.02)
  for _ in range(20):
    with tf.GradientTape() as tape:
      loss = -tf.reduce_sum(posterior.unnormalized_log_prob(image=image))
    optimizer.apply_gradients([(tape.gradient(loss, image), image)])
  final = posterior.unnormalized_log_prob(image=image).numpy()
  assert np.all(np.isfinite(final))
  assert np.all(final > expected + 0.1), (expected, final)


# Sample / Independent / batches / mixtures ----------------------------------


def test_sample_two_images_as_one_event(model, images):
  """`tfd.Sample(flow, 2)`: a pair of i.i.d. images is one event."""
  pairs = tfd.Sample(model.flow, 2)
  assert pairs.event_shape == (2,) + SHAPE
  pair_batch = images.reshape((BATCH // 2, 2) + SHAPE)
  expected = _reference_log_prob(model, images).numpy().reshape(-1, 2).sum(-1)
  np.testing.assert_allclose(pairs.log_prob(pair_batch), expected, rtol=1e-5)
  _assert_images(pairs.sample(3, seed=[1, 2]), [3, 2])


def test_independent_over_broadcast_batch(model, images):
  """`tfd.Independent(tfd.BatchBroadcast(flow, [4]), 1)`: four images."""
  batch = tfd.BatchBroadcast(model.flow, [4])
  assert batch.batch_shape == [4]
  joint = tfd.Independent(batch, reinterpreted_batch_ndims=1)
  assert joint.batch_shape == [] and joint.event_shape == (4,) + SHAPE
  quads = images.reshape((2, 4) + SHAPE)
  expected = _reference_log_prob(model, images).numpy().reshape(2, 4).sum(-1)
  np.testing.assert_allclose(joint.log_prob(quads), expected, rtol=1e-5)
  _assert_images(joint.sample(2, seed=[3, 4]), [2, 4])


def _tempered_flows(model, temperatures):
  """A batch of flows whose priors are N(0, T²I), one per temperature."""
  temperatures = tf.constant(temperatures, model.float_dtype)
  base = tfd.Sample(tfd.Normal(tf.zeros_like(temperatures), temperatures),
                    sample_shape=SHAPE)
  return tfd.TransformedDistribution(base, tfb.Invert(model.bijector))


def test_batch_of_tempered_flows(model, images):
  """A batched base gives a batch of flows (here: sampling temperatures)."""
  temperatures = [0.5, 1., 1.5]
  flows = _tempered_flows(model, temperatures)
  assert flows.batch_shape == [3] and flows.event_shape == SHAPE
  log_prob = flows.log_prob(images[:, np.newaxis])
  assert log_prob.shape == (BATCH, 3)
  for i, t in enumerate(temperatures):
    np.testing.assert_allclose(log_prob[:, i],
                               _reference_log_prob(model, images, t),
                               rtol=1e-5)
  np.testing.assert_allclose(log_prob[:, 1], model.flow.log_prob(images),
                             rtol=1e-5)
  _assert_images(flows.sample(2, seed=[5, 6]), [2, 3])


def test_mixture_same_family_over_temperatures(model, images):
  """`tfd.MixtureSameFamily` over the temperature batch."""
  weights = np.array([0.2, 0.3, 0.5])
  temperatures = [0.7, 1., 1.3]
  mixture = tfd.MixtureSameFamily(
      tfd.Categorical(probs=tf.constant(weights, tf.float32)),
      _tempered_flows(model, temperatures))
  assert mixture.batch_shape == [] and mixture.event_shape == SHAPE
  parts = np.stack([_reference_log_prob(model, images, t).numpy()
                    for t in temperatures], axis=-1)
  expected = np.logaddexp.reduce(np.log(weights) + parts, axis=-1)
  np.testing.assert_allclose(mixture.log_prob(images), expected, rtol=1e-5)
  samples = mixture.sample(5, seed=[7, 8])
  _assert_images(samples, [5])
  assert np.all(np.isfinite(mixture.log_prob(samples)))


def test_mixture_of_two_models(model, other_model, images):
  """`tfd.Mixture` of two independently initialised Flow++ models."""
  mixture = tfd.Mixture(cat=tfd.Categorical(probs=[0.3, 0.7]),
                        components=[model.flow, other_model.flow])
  lp_a = _reference_log_prob(model, images).numpy()
  lp_b = _reference_log_prob(other_model, images).numpy()
  assert np.max(np.abs(lp_a - lp_b)) > 0.1  # The components really differ.
  expected = np.logaddexp(math.log(0.3) + lp_a, math.log(0.7) + lp_b)
  np.testing.assert_allclose(mixture.log_prob(images), expected, rtol=1e-5)
  samples = mixture.sample(6, seed=[9, 10])
  _assert_images(samples, [6])
  assert np.all(np.isfinite(mixture.log_prob(samples)))


# MAF / IAF prior on the latent -----------------------------------------------


def test_maf_prior_log_prob(model, images):
  """A MAF prior on the flow latent: log p = log p_MAF(z) + log|∂z/∂y|."""
  made = _made(seed=0)
  dist = _latent_prior_flow(model, tfb.MaskedAutoregressiveFlow(made))
  assert dist.event_shape == SHAPE
  log_prob = dist.log_prob(images)

  # The MAF density of a flat latent z, by hand: one MADE pass gives
  # (shift, log_scale)(z); u = (z − shift)·exp(−log_scale) is standard normal.
  y = tf.constant(images)
  z = tf.reshape(model.bijector.forward(y), [BATCH, D])
  shift, log_scale = tf.unstack(made(z), axis=-1)
  u = (z - shift) * tf.exp(-log_scale)
  log_maf = (np.sum(-0.5 * np.float64(u)**2, -1) - 0.5 * D * LOG_2PI -
             np.sum(np.float64(log_scale), -1))
  log_det = model.bijector.forward_log_det_jacobian(y, event_ndims=3)
  np.testing.assert_allclose(log_prob, log_maf + log_det, rtol=1e-5)

  samples, sample_log_prob = dist.experimental_sample_and_log_prob(
      4, seed=[11, 12])
  _assert_images(samples, [4])
  # Re-encoding the samples (a fresh tensor, so no cached values) agrees.
  np.testing.assert_allclose(dist.log_prob(tf.identity(samples)),
                             sample_log_prob, rtol=1e-3)


def test_maf_prior_training_beats_the_gaussian_prior(model, images):
  """Adam on the MAF's variables only improves the NLL; the flow is frozen."""
  made = _made(seed=1)
  dist = _latent_prior_flow(model, tfb.MaskedAutoregressiveFlow(made))
  data = tf.constant(images)
  flow_before = [v.numpy() for v in model.bijector.trainable_variables]
  gaussian_nll = -float(tf.reduce_mean(model.flow.log_prob(images)))

  def nll():
    # tf.identity: TFP caches bijector results per input tensor.
    return -tf.reduce_mean(dist.log_prob(tf.identity(data)))

  optimizer = tf.keras.optimizers.Adam(0.01)

  @tf.function
  def train_step():
    with tf.GradientTape() as tape:
      loss = nll()
    grads = tape.gradient(loss, made.trainable_variables)
    optimizer.apply_gradients(zip(grads, made.trainable_variables))
    return loss

  initial = float(nll())
  assert abs(initial - gaussian_nll) < 2.  # Near-identity initialisation.
  for _ in range(40):
    train_step()
  final = float(nll())
  assert final < initial - 2., (initial, final)
  assert final < gaussian_nll - 2., (gaussian_nll, final)
  for before, v in zip(flow_before, model.bijector.trainable_variables):
    np.testing.assert_array_equal(before, v.numpy(), err_msg=v.name)


def test_iaf_prior_samples(model):
  """An IAF (`tfb.Invert(maf)`) prior: one MADE pass per sample."""
  dist = _latent_prior_flow(
      model, tfb.Invert(tfb.MaskedAutoregressiveFlow(_made(seed=2))))
  samples, sample_log_prob = dist.experimental_sample_and_log_prob(
      8, seed=[13, 14])
  _assert_images(samples, [8])
  # Scoring fresh tensors needs the D-step sequential inversion of the IAF and
  # the flow's encoder; it must agree with the density computed on the way.
  np.testing.assert_allclose(dist.log_prob(tf.identity(samples)),
                             sample_log_prob, rtol=1e-3)
