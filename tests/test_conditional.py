"""Class-conditional models p(x | y): normalisation per label, round trips,
log-dets with a label context, class sampling, the Bayes classifier, TFP
composition and the ``labels`` argument checks.

The exact-check model is test_model's 2×2×1, L = 4 model (256 possible
images) made class-conditional; the toy data has two trivially separable
classes (dark images: levels 0-1; bright images: levels 2-3).
"""

import itertools

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_flowpp import bijectors as fb
from tfp_flowpp import config as config_lib
from tfp_flowpp import model_builder
from tfp_flowpp import scoring
from tfp_flowpp.training import config as train_config_lib
from tfp_flowpp.training import optimization

tfd = tfp.distributions

LEVELS = 4


def tiny_config(**overrides):
  """test_model's exact-check config: 2×2×1 images, L = 4."""
  values = dict(
      image_shape=(2, 2, 1), num_levels=LEVELS, flow='checkerboard:4',
      components=4, filters=16, blocks=1, heads=2, dropout=0.,
      dequantizer='variational', dequantizer_flow='checkerboard:2',
      dequantizer_filters=8, dequantizer_blocks=1, context_channels=4,
      context_blocks=1, seed=3, precision='float32')
  values.update(overrides)
  return config_lib.ModelConfig(**values)


def all_images():
  grid = itertools.product(range(LEVELS), repeat=4)
  return tf.constant(np.array(list(grid), np.int32).reshape(-1, 2, 2, 1))


def conditional_config(**overrides):
  values = dict(conditioning='class', num_classes=2, class_embedding=4,
                preprocess_alpha=1., dtype='float64')
  values.update(overrides)
  return tiny_config(**values)


def two_class_data(n=2048, seed=0):
  """Class 0: every pixel in {0, 1}; class 1: every pixel in {2, 3}."""
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, 2, size=n)
  images = rng.integers(0, 2, size=(n, 2, 2, 1)) + 2 * labels[:, None, None,
                                                              None]
  return tf.constant(images, tf.int32), tf.constant(labels, tf.int32)


def train(model, images, labels, steps, batch=64, lr=3e-3, seed=0):
  optimizer = optimization.make_optimizer(
      train_config_lib.TrainConfig(
          learning_rate=lr, warmup_steps=10, ema_decay=0.))
  variables = model.trainable_variables
  optimizer.build(variables)

  @tf.function
  def step(x, y, i):
    with tf.GradientTape() as tape:
      loss = -tf.reduce_mean(
          model.log_prob(x, labels=y, seed=tf.stack([seed, i]),
                         training=True))
    optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
    return loss

  rng = np.random.default_rng(seed)
  losses = []
  for i in range(steps):
    idx = rng.integers(0, int(images.shape[0]), batch)
    losses.append(
        float(step(tf.gather(images, idx), tf.gather(labels, idx),
                   tf.constant(i))))
  return losses


@pytest.fixture(scope='module')
def trained():
  model = model_builder.build_model(conditional_config())
  images, labels = two_class_data()
  model.initialize(images[:256], seed=[0, 0], labels=labels[:256],
                   class_counts=np.bincount(labels.numpy(), minlength=2))
  losses = train(model, images, labels, steps=200)
  return model, images, labels, losses


def total_probability(model, label, k=256, seed=7):
  images = all_images()
  log_p = model.importance_weighted_log_prob(
      images, k, seed=tf.constant([seed, label]), images_per_pass=256 * 128,
      labels=label)
  return float(tf.reduce_sum(tf.exp(log_p)))


def test_probabilities_sum_to_one_for_each_label(trained):
  model, _, _, losses = trained
  assert np.mean(losses[-20:]) < np.mean(losses[:20]) - 0.5, losses[::20]
  for label in (0, 1):
    total = total_probability(model, label)
    assert abs(total - 1.) < 0.03, (label, total)


def test_each_label_puts_its_mass_on_its_class(trained):
  model, _, _, _ = trained
  images = all_images()
  bright = tf.reduce_all(images >= 2, axis=[1, 2, 3])
  dark = tf.reduce_all(images <= 1, axis=[1, 2, 3])
  for label, support in ((0, dark), (1, bright)):
    p = tf.exp(model.importance_weighted_log_prob(
        images, 16, seed=[1, label], labels=label,
        images_per_pass=256 * 16))
    assert float(tf.reduce_sum(tf.boolean_mask(p, support))) > 0.8, label


def test_samples_of_a_label_are_classified_as_that_label(trained):
  model, _, _, _ = trained
  for label in (0, 1):
    samples = model.sample(64, seed=[3, label], labels=label)
    brightness = tf.reduce_mean(tf.cast(samples, tf.float64), axis=[1, 2, 3])
    # The trivial classifier of the toy data, and the model's own.
    assert np.mean((brightness.numpy() >= 1.5) == bool(label)) > 0.9
    predicted = np.argmax(model.predict(samples, seed=[4, label]), axis=-1)
    assert np.mean(predicted == label) > 0.9, (label, predicted)


def test_bayes_classifier_uses_the_class_frequencies(trained):
  model, images, labels, _ = trained
  x, y = images[:256], labels[:256]
  log_likelihoods = model.class_log_likelihoods(x, seed=[5, 5])
  assert log_likelihoods.shape == (256, 2)
  probabilities = model.predict(x, seed=[5, 5])
  expected = tf.nn.softmax(log_likelihoods + model.log_class_frequencies)
  np.testing.assert_allclose(probabilities, expected, atol=1e-9)
  np.testing.assert_allclose(
      np.exp(model.log_class_frequencies),
      np.bincount(labels.numpy(), minlength=2) / len(labels), atol=1e-9)
  assert np.mean(np.argmax(probabilities, -1) == y.numpy()) > 0.95
  iw = model.class_log_likelihoods(x[:8], num_samples=4, seed=[5, 6])
  np.testing.assert_allclose(
      iw[:, 1],
      model.importance_weighted_log_prob(x[:8], 4, seed=[5, 6], labels=1),
      atol=1e-9)


def test_marginal_bound_needs_no_labels_and_sums_to_one(trained):
  """log Σ_y π_y P(x | y): Σ_x of its exp is 1, and it is what scoring uses."""
  model, _, _, _ = trained
  images = all_images()
  marginal = model.marginal_log_prob(images, 256, seed=[6, 6],
                                     images_per_pass=256 * 128)
  # Σ_x Σ_y π_y P(x | y) = 1; without the π weighting it would be ≈ 2.
  assert abs(float(tf.reduce_sum(tf.exp(marginal))) - 1.) < 0.03
  x = images[::17]
  joint = model.class_log_likelihoods(x, 4, seed=[6, 7]) + (
      model.log_class_frequencies)
  np.testing.assert_allclose(
      model.marginal_log_prob(x, 4, seed=[6, 7]),
      tf.reduce_logsumexp(joint, axis=-1), atol=1e-9)
  bpd = scoring.PerImageBpd(model, batch_size=8, seed=3)(x.numpy(), 4)
  assert bpd.shape == (16,) and np.all(np.isfinite(bpd))
  np.testing.assert_allclose(
      bpd[:8],
      model.nats_to_bits_per_dim(
          model.marginal_log_prob(x[:8], 4, seed=tf.constant([3, 0]))),
      rtol=1e-6)


def test_round_trip_with_labels():
  model = model_builder.build_model(conditional_config(num_classes=3))
  images, _ = two_class_data(12)
  labels = tf.constant(np.arange(12) % 3, tf.int32)
  model.initialize(images, seed=[0, 0], labels=labels)
  z = model.encode(images, labels=labels)
  np.testing.assert_array_equal(model.decode(z, labels=labels), images)
  y = tf.cast(images, tf.float64) + 0.3
  np.testing.assert_allclose(
      model.decode_continuous(model.encode_continuous(y, labels=labels),
                              labels=labels), y, atol=1e-6)
  # The label matters: another label gives other latents.
  other = model.encode(images, labels=(labels + 1) % 3)
  assert float(tf.reduce_max(tf.abs(other - z))) > 1e-3


@pytest.mark.parametrize('network', ['gated_resnet', 'glow'])
def test_log_det_with_a_label_context_matches_the_jacobian(network):
  model = model_builder.build_model(conditional_config(network=network,
                                                       glow_hidden=8))
  images, labels = two_class_data(4)
  model.initialize(images, seed=[0, 0], labels=labels)
  classes = model.class_conditioning  # A prior that differs per class.
  rng = np.random.default_rng(5)
  classes.prior_mean.assign(rng.normal(size=classes.prior_mean.shape))
  classes.prior_log_scale.assign(
      0.3 * rng.normal(size=classes.prior_log_scale.shape))
  y = tf.cast(images, tf.float64) + 0.37
  kwargs = model.flow_bijector_kwargs(labels)
  bijector = model.bijector  # data -> latent, analytic direction.
  with tf.GradientTape() as tape:
    tape.watch(y)
    z = bijector.forward(y, **kwargs)
  jacobian = tape.batch_jacobian(z, y).numpy().reshape(4, 4, 4)
  expected = np.linalg.slogdet(jacobian)[1]
  fldj = bijector.forward_log_det_jacobian(tf.identity(y), event_ndims=3,
                                           **kwargs)
  np.testing.assert_allclose(fldj, expected, atol=1e-6)
  # The continuous log-density is the change of variables with p(z | y).
  prior = model.class_conditioning.prior(labels)
  np.testing.assert_allclose(
      model.continuous_log_prob(y, labels=labels),
      prior.log_prob(z) + expected, atol=1e-6)
  np.testing.assert_allclose(
      model.continuous_flow(labels).log_prob(y, bijector_kwargs=kwargs),
      prior.log_prob(z) + expected, atol=1e-6)


class _ContextSpy(tf.Module):

  def __init__(self, network, seen):
    super().__init__()
    self.network, self.seen = network, seen

  def __call__(self, x, context=None, training=False):
    self.seen.append(None if context is None else tuple(context.shape))
    return self.network(x, context=context, training=training)


def test_label_context_reaches_every_coupling_network():
  model = model_builder.build_model(conditional_config(class_prior=False))
  images, labels = two_class_data(4)
  seen = []
  couplings = [m for m in model.submodules
               if isinstance(m, fb.CouplingBijector)]
  for c in couplings:
    c._network = _ContextSpy(c._network, seen)  # pylint: disable=protected-access
  model.log_prob(images, labels=labels, seed=[1, 1])
  # 4 flow couplings see the [N, 1, 1, E] embedding; 2 dequantizer couplings
  # the image features (4 channels) concatenated with it.
  assert len(couplings) == 6 and sorted(seen) == sorted(
      [(4, 1, 1, 4)] * 4 + [(4, 2, 1, 8)] * 2), seen


@pytest.mark.parametrize('parts,expect', [
    (dict(), ('embedding', 'prior_mean')),
    (dict(class_prior=False), ('embedding',)),
    (dict(class_context=False, class_dequantizer=False), ('prior_mean',)),
])
def test_ablation_parts(parts, expect):
  model = model_builder.build_model(conditional_config(**parts))
  classes = model.class_conditioning
  assert (classes.embedding_table is not None) == ('embedding' in expect)
  assert (classes.prior_mean is not None) == ('prior_mean' in expect)
  unconditional = model_builder.build_model(tiny_config(
      preprocess_alpha=1., dtype='float64'))
  extra = (model_builder.count_parameters(model) -
           model_builder.count_parameters(unconditional))
  assert extra > 0
  images, labels = two_class_data(4)
  assert model.log_prob(images, labels=labels, seed=[1, 1]).shape == (4,)


def test_config_needs_a_conditional_part():
  with pytest.raises(ValueError, match='at least one conditional part'):
    conditional_config(class_prior=False, class_embedding=0)


RANGE_ERROR = r'labels must be class indices in \[0, 2\)'


def test_labels_argument_errors():
  model = model_builder.build_model(conditional_config())
  images, labels = two_class_data(4)
  with pytest.raises(ValueError, match='class-conditional .*pass labels='):
    model.log_prob(images)
  with pytest.raises(ValueError, match='pass labels='):
    model.sample(2, seed=[1, 2])
  with pytest.raises(ValueError, match='pass labels='):
    model.importance_weighted_log_prob(images, 2)
  with pytest.raises(TypeError, match='integer class indices'):
    model.log_prob(images, labels=tf.constant([0., 1., 0., 1.]))
  with pytest.raises(tf.errors.InvalidArgumentError, match=RANGE_ERROR):
    model.log_prob(images, labels=[0, 1, 2, 0])
  with pytest.raises(tf.errors.InvalidArgumentError, match=RANGE_ERROR):
    model.sample(2, labels=-1)
  with pytest.raises(tf.errors.InvalidArgumentError, match=RANGE_ERROR):
    tf.function(lambda y: model.log_prob(images, labels=y, seed=[1, 1]))(
        tf.constant([0, 1, 5, 0]))
  unconditional = model_builder.build_model(tiny_config())
  with pytest.raises(ValueError, match='not class-conditional'):
    unconditional.log_prob(images, labels=labels)
  with pytest.raises(ValueError, match='not class-conditional'):
    unconditional.predict(images)
  assert unconditional.num_classes is None


def test_composes_as_a_tfp_joint_distribution(trained):
  model, _, _, _ = trained
  joint = tfd.JointDistributionSequential([
      tfd.Categorical(logits=model.log_class_frequencies),
      lambda y: model.given(y),
  ])
  y, x = joint.sample(32, seed=[7, 7])
  assert y.shape == (32,) and x.shape == (32, 2, 2, 1)
  brightness = tf.reduce_mean(tf.cast(x, tf.float64), axis=[1, 2, 3])
  assert np.mean((brightness.numpy() >= 1.5) == (y.numpy() == 1)) > 0.9
  seed = tf.constant([8, 8])
  expected = (tfd.Categorical(logits=model.log_class_frequencies).log_prob(y)
              + model.log_prob(x, labels=y, seed=seed))
  given = model.given(y)
  assert given.batch_shape == (32,) and given.event_shape == (2, 2, 1)
  np.testing.assert_allclose(
      tfd.Categorical(logits=model.log_class_frequencies).log_prob(y) +
      given.log_prob(x, seed=seed), expected, atol=1e-9)
  assert model.given(1).sample(3, seed=[1, 1]).shape == (3, 2, 2, 1)
  assert np.isfinite(joint.log_prob([y, x])).all()


def test_marginal_bound_of_an_unconditional_model_is_its_bound():
  model = model_builder.build_model(tiny_config())
  model.initialize(all_images(), seed=[0, 0])
  x = all_images()[:8]
  np.testing.assert_allclose(model.marginal_log_prob(x, seed=[1, 2]),
                             model.log_prob(x, seed=[1, 2]), rtol=1e-6)
  np.testing.assert_allclose(
      model.marginal_log_prob(x, 3, seed=[1, 2]),
      model.importance_weighted_log_prob(x, 3, seed=[1, 2]), rtol=1e-6)
