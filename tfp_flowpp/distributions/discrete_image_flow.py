"""`DiscreteImageFlow`: a `tfd.Distribution` over images with L levels per pixel.

A continuous flow density over [0, L)^D plus a dequantizer q(u | x), with
dequantization and importance-weighted bounds, sampling and latents; see
`DiscreteImageFlow`.
"""

import math

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_flowpp.bijectors import actnorm
from tfp_flowpp.bijectors import conditioning
from tfp_flowpp.networks import blocks

tfb = tfp.bijectors
tfd = tfp.distributions

__all__ = ['DiscreteImageFlow']

_DEFAULT_IMAGES_PER_PASS = 256
# Folded into a step's seed for its dropout masks, so they are independent of
# the dequantization noise drawn from the same seed ("drop").
_DROPOUT_SEED_TAG = 0x64726f70


class DiscreteImageFlow(tfd.Distribution):
  """Flow density over discrete images with a dequantization bound.

  A `tfd.Distribution` over integer images ``x ∈ {0, …, L−1}^D`` (event
  shape ``(H, W, C)``, ``D = H·W·C``) made of a continuous flow density p
  over [0, L)^D [(Dinh et al., 2017)][2] and a dequantizer q(u | x) over the
  unit cube [(Theis et al., 2016)][3], [(Ho et al., 2019)][1]:

  ```none
  p(y)  = N(flow(y); 0, I) · |det ∂flow(y)/∂y|     (flow: data → latent)
  P(x)  = ∫_[0,1)^D p(x + u) du
  log P(x) ≥ E_{u ~ q(·|x)}[log p(x + u) − log q(u | x)]              (1)
  log P(x) ≥ E[log (1/k) Σ_i p(x + u_i) / q(u_i | x)],  u_i ~ q(·|x)   (2)
  bits/dim = −bound / (D ln 2)
  ```

  The continuous density is `flow`, the
  `tfd.TransformedDistribution(N(0, I), tfb.Invert(flow_bijector))`, so it
  composes with other TFP distributions and bijectors directly. Methods:

  * ``log_prob(x, seed=..., training=...)``: the single-sample bound (1) in
    nats per image, ``log p(x + u) − log q(u|x)`` with u ~ q(·|x) -- a
    stochastic lower bound whose expectation equals log P(x) only when
    ``q(u|x) = p(x + u) / P(x)``;
  * ``importance_weighted_log_prob(x, k)``: the bound (2), tighter as k
    grows (the official Flow++ evaluation uses k = 4096), evaluated in
    chunks so memory stays bounded for any k;
  * ``bits_per_dim(x, k)``: ``−bound / (D ln 2)``; a model that is uniform
    over the L levels gets exactly ``log2 L``;
  * ``sample(n, seed=..., temperature=T)``: int32 images in [0, L), the
    prior's standard deviation scaled by T;
  * ``encode`` / ``decode`` / ``interpolate``: images ↔ latents;
  * ``initialize(x)``: the data-dependent initialisation of every `ActNorm`;
  * ``probability_mass_in_range()``: how much of p lies in [0, L]^D, i.e.
    ``Σ_x P(x)`` (below 1 when the preprocessing's support is larger).

  Precision (``ModelConfig.precision``, `tfp_flowpp.precision`): the
  conditioner networks may compute in bfloat16 or float16, but every
  bijector output and log-det, the prior, the bounds and bits/dim are in
  ``dtype``, so a bound is an exact function of the network outputs it
  used; only those outputs carry the low precision. ``encode`` (midpoint
  noise) then ``decode`` reproduces the images exactly under every policy,
  and ``decode_continuous(encode_continuous(y))`` is as exact as in float32
  (tested to 1e-4): the conditioning half passes each coupling unchanged, so
  in the inverse its network sees its forward input up to the float32
  round-off of the later layers' inverses, which the cast to the low dtype
  almost always rounds away.

  Class-conditional models (built with a `ClassConditioning`) are
  p(x | y): ``log_prob``, ``importance_weighted_log_prob``, ``bits_per_dim``,
  ``sample``, ``encode`` and ``decode`` then need ``labels=`` (int class
  indices ``[B]``, or a scalar for all), and

  * ``class_log_likelihoods(x, num_samples)``: the bound on log P(x | y) for
    every class, ``[B, K]`` (the same dequantization noise seed for each
    class);
  * ``predict(x, num_samples)``: p(y | x) by Bayes' rule with the training
    class frequencies as p(y), ``[B, K]``;
  * ``given(labels)``: the `tfd.Distribution` over images with the labels
    fixed, so the joint p(x, y) composes in TFP, e.g.::

      joint = tfd.JointDistributionSequential([
          tfd.Categorical(logits=model.log_class_frequencies),
          lambda y: model.given(y)])
      y, x = joint.sample(16, seed=seed)   # Labels ~ π, images ~ p(x | y).
      joint.log_prob([y, x])                # log π_y + bound on log P(x | y).

  #### Examples

  A flow that maps U[0, L)^D to N(0, I), ``z = Φ⁻¹(x / L)``, with uniform
  dequantization is the uniform model: exactly ``log2 4 = 2`` bits per
  dimension.

  >>> import numpy as np
  >>> import tensorflow as tf
  >>> import tensorflow_probability as tfp
  >>> from tfp_flowpp import bijectors as fb
  >>> from tfp_flowpp import distributions as fd
  >>> from tfp_flowpp import networks as fn
  >>> tfb = tfp.bijectors
  >>> uniform = fd.DiscreteImageFlow(
  ...     tfb.Chain([tfb.Invert(tfb.NormalCDF()), tfb.Scale(1. / 4.)]),
  ...     fd.UniformDequantizer((2, 2, 1)), image_shape=(2, 2, 1),
  ...     num_levels=4)
  >>> x = tf.constant(np.arange(12).reshape(3, 2, 2, 1) % 4)
  >>> print(uniform.bits_per_dim(x, seed=[1, 2]).numpy())
  [2. 2. 2.]
  >>> print(uniform.bits_per_dim(x, num_samples=8, seed=[1, 2]).numpy())
  [2. 2. 2.]
  >>> uniform.probability_mass_in_range(num_samples=1000, seed=[3, 4])
  1.0

  A Flow++-style model from parts (preprocessing, a stripe split, a norm
  and a mixture-of-logistics coupling):

  >>> split = fb.StripeSplit((2, 2, 1))
  >>> config = fn.GatedResNetConfig(filters=4, blocks=1, heads=2)
  >>> network = fn.FlowppCouplingNetwork(
  ...     (2, 1, 1), 2 + 3 * 2, config, rng=np.random.default_rng(0))
  >>> flow = tfb.Chain([  # Applied right to left (data → latent).
  ...     tfb.Invert(split),
  ...     fb.MixLogisticCoupling(network, (2, 1, 2), num_components=2),
  ...     fb.ActNorm((2, 1, 2)), split, fb.LogitPreprocess(num_levels=4)])
  >>> model = fd.DiscreteImageFlow(
  ...     flow, fd.UniformDequantizer((2, 2, 1)), (2, 2, 1), num_levels=4)
  >>> model.initialize(x, seed=[1, 2]).shape  # Nats per image.
  TensorShape([3])
  >>> samples = model.sample(5, seed=[3, 4], temperature=0.5)
  >>> samples.shape, samples.dtype
  (TensorShape([5, 2, 2, 1]), tf.int32)
  >>> np.array_equal(model.decode(model.encode(x)), x)
  True

  #### References

  [1]: Jonathan Ho, Xi Chen, Aravind Srinivas, Yan Duan and Pieter Abbeel.
       Flow++: Improving Flow-Based Generative Models with Variational
       Dequantization and Architecture Design. In _International Conference
       on Machine Learning_, 2019. https://arxiv.org/abs/1902.00275

  [2]: Laurent Dinh, Jascha Sohl-Dickstein and Samy Bengio. Density
       Estimation using Real NVP. In _International Conference on Learning
       Representations_, 2017. https://arxiv.org/abs/1605.08803

  [3]: Lucas Theis, Aäron van den Oord and Matthias Bethge. A note on the
       evaluation of generative models. In _International Conference on
       Learning Representations_, 2016. https://arxiv.org/abs/1511.01844
  """

  def __init__(self,
               flow_bijector,
               dequantizer,
               image_shape,
               num_levels,
               class_conditioning=None,
               class_context=True,
               class_dequantizer=True,
               dtype=tf.float32,
               validate_args=False,
               name='DiscreteImageFlow'):
    """Creates the distribution.

    Args:
      flow_bijector: data → latent bijector on ``[..., H, W, C]`` taking
        ``x + u ∈ [0, L]^D`` to a standard-normal latent of the same shape.
      dequantizer: `UniformDequantizer` or `VariationalDequantizer`.
      image_shape: ``(H, W, C)``.
      num_levels: L, number of discrete values per pixel.
      class_conditioning: a `ClassConditioning` for a class-conditional model
        p(x | y), or None.
      class_context: whether the label embedding (if any) is the ``context``
        of the flow's couplings (routed by name, broadcast over H×W).
      class_dequantizer: whether the label embedding (if any) also conditions
        the dequantizer.
      dtype: float dtype of the continuous computation. Samples are int32.
      validate_args: check that inputs are integers in [0, L) at run time.
      name: distribution name.
    """
    parameters = dict(locals())
    self._image_shape = tuple(int(d) for d in image_shape)
    self._num_levels = int(num_levels)
    self._float_dtype = tf.as_dtype(dtype)
    with tf.name_scope(name) as name:
      self._bijector = flow_bijector
      self._dequantizer = dequantizer
      if class_conditioning is not None:
        # Only conditional models track it (checkpoint object graph).
        self._class_conditioning = class_conditioning
      self._classes = class_conditioning
      self._class_context = bool(class_context)
      self._class_dequantizer = bool(class_dequantizer)
      base = tfd.Sample(
          tfd.Normal(
              tf.constant(0., self._float_dtype),
              tf.constant(1., self._float_dtype)),
          sample_shape=self._image_shape,
          name='prior')
      self._flow = tfd.TransformedDistribution(
          base, tfb.Invert(flow_bijector), name='continuous_flow')
      super().__init__(
          dtype=tf.int32,
          reparameterization_type=tfd.NOT_REPARAMETERIZED,
          validate_args=validate_args,
          allow_nan_stats=False,
          parameters=parameters,
          name=name)
    blocks.assign_dropout_streams(self)

  # Structure -----------------------------------------------------------------

  @property
  def flow(self):
    """The continuous density p over [0, L)^D (`tfd.TransformedDistribution`)."""
    return self._flow

  @property
  def bijector(self):
    """The data → latent bijector."""
    return self._bijector

  @property
  def prior(self):
    """The latent N(0, I) distribution."""
    return self._flow.distribution

  @property
  def dequantizer(self):
    return self._dequantizer

  @property
  def class_conditioning(self):
    """The `ClassConditioning` of a class-conditional model, else None."""
    return self._classes

  @property
  def num_classes(self):
    """K of a class-conditional model p(x | y); None for p(x)."""
    return None if self._classes is None else self._classes.num_classes

  @property
  def log_class_frequencies(self):
    """log p(y) = log π_y, the training class frequencies ``[K]``."""
    return self._conditional('log_class_frequencies').log_class_frequencies

  @property
  def image_shape(self):
    return self._image_shape

  @property
  def num_levels(self):
    return self._num_levels

  @property
  def num_dims(self):
    """D = H·W·C."""
    return int(math.prod(self._image_shape))

  @property
  def float_dtype(self):
    return self._float_dtype

  def _event_shape(self):
    return tf.TensorShape(self._image_shape)

  def _event_shape_tensor(self):
    return tf.constant(self._image_shape, tf.int32)

  def _batch_shape(self):
    return tf.TensorShape([])

  def _batch_shape_tensor(self):
    return tf.constant([], tf.int32)

  # Inputs --------------------------------------------------------------------

  def _images(self, x):
    """Validates integer images and casts them to the float dtype."""
    x = tf.convert_to_tensor(x)
    if not (x.dtype.is_integer or x.dtype.is_floating):
      raise TypeError(f'{self.name}: images must be integer (or integer-valued '
                      f'float) tensors, got dtype {x.dtype.name}.')
    if x.shape.rank is not None and (x.shape.rank < 3 or any(
        s is not None and s != e
        for s, e in zip(x.shape[-3:], self._image_shape))):
      raise ValueError(f'{self.name}: expected images of shape [..., '
                       f'{", ".join(map(str, self._image_shape))}], got '
                       f'{x.shape}.')
    assertions = []
    if self.validate_args:
      assertions += [
          tf.debugging.assert_greater_equal(
              x,
              tf.zeros([], x.dtype),
              message=f'{self.name}: pixel values must be >= 0'),
          tf.debugging.assert_less(
              x,
              tf.cast(self._num_levels, x.dtype),
              message=f'{self.name}: pixel values must be < '
              f'{self._num_levels}'),
      ]
      if x.dtype.is_floating:
        assertions.append(
            tf.debugging.assert_equal(
                x,
                tf.floor(x),
                message=f'{self.name}: pixel values must be integers'))
    with tf.control_dependencies(assertions):
      return tf.cast(x, self._float_dtype)

  def _conditional(self, what):
    if self._classes is None:
      raise ValueError(f'{self.name} is not class-conditional, so it has no '
                       f'{what}.')
    return self._classes

  def _labels(self, labels, batch_shape):
    """Checked int32 labels broadcast to ``batch_shape`` (None: p(x))."""
    if self._classes is None:
      if labels is not None:
        raise ValueError(f'{self.name} is not class-conditional; call it '
                         'without labels.')
      return None
    if labels is None:
      raise ValueError(f'{self.name} is class-conditional (num_classes='
                       f'{self._classes.num_classes}): pass labels=, integer '
                       'class indices [batch] (or one for all).')
    return tf.broadcast_to(self._classes.check_labels(labels), batch_shape)

  def _flow_kwargs(self, training, labels=None):
    context = None
    if labels is not None and self._class_context:
      context = self._classes.embedding(labels)
    return conditioning.conditional_kwargs(
        self._flow.bijector, context=context, training=training)

  def _dequantizer_context(self, labels):
    if labels is None or not self._class_dequantizer:
      return None
    return self._classes.embedding(labels)

  def continuous_flow(self, labels=None):
    """The continuous density: `flow`, or p(y | labels) of a conditional model.

    For a class-conditional model, the `tfd.TransformedDistribution` of the
    class-conditional prior (batch shape = the labels' shape); its bijector
    needs the label context, so evaluate it with
    ``bijector_kwargs=model.flow_bijector_kwargs(labels)``.
    """
    if self._classes is None:
      self._labels(labels, [])
      return self._flow
    labels = self._classes.check_labels(labels)
    return tfd.TransformedDistribution(
        self._classes.prior(labels), self._flow.bijector,
        name='continuous_flow')

  def flow_bijector_kwargs(self, labels=None, training=False):
    """``bijector_kwargs`` of `continuous_flow` (the routed label context)."""
    if labels is not None:
      labels = self._conditional('labels').check_labels(labels)
    return self._flow_kwargs(training, labels)

  # Densities -----------------------------------------------------------------

  def continuous_log_prob(self, y, training=False, labels=None):
    """log p(y) of the continuous flow at dequantized inputs ``y ∈ [0, L]^D``."""
    y = tf.convert_to_tensor(y, self._float_dtype)
    labels = self._labels(labels, tf.shape(y)[:-3])
    return self._continuous_log_prob(y, training, labels)

  def _continuous_log_prob(self, y, training, labels):
    if labels is None:
      return self._flow.log_prob(
          y, bijector_kwargs=self._flow_kwargs(training))
    flow = tfd.TransformedDistribution(
        self._classes.prior(labels), self._flow.bijector)
    return flow.log_prob(y, bijector_kwargs=self._flow_kwargs(
        training, labels))

  def _bound(self, x, seed, training, labels=None):
    if training is True:
      # Stateless dropout masks from the step's seed (see `networks.blocks`).
      training = tf.random.experimental.stateless_fold_in(
          tfp.random.sanitize_seed(seed), _DROPOUT_SEED_TAG)
    u, log_q = self._dequantizer.sample_and_log_prob(
        x, seed=seed, training=training,
        label_context=self._dequantizer_context(labels))
    return self._continuous_log_prob(x + u, training, labels) - log_q

  def _log_prob(self, x, seed=None, training=False, labels=None):
    """Single-sample dequantization lower bound on log P(x [| y]), in nats."""
    x = self._images(x)
    return self._bound(x, seed, training, self._labels(labels,
                                                       tf.shape(x)[:-3]))

  def importance_weighted_log_prob(self,
                                   x,
                                   num_samples,
                                   seed=None,
                                   images_per_pass=None,
                                   labels=None,
                                   name=None):
    """Importance-weighted bound with ``num_samples`` draws u ~ q(·|x).

    ``log (1/k) Σ exp(log p(x + u_i) − log q(u_i|x))`` is a lower bound on
    log P(x) that tightens as k grows; ``exp`` of it is an unbiased
    estimate of P(x). Draws are processed ``images_per_pass`` images at a
    time (default 256 = chunk × batch), so memory does not grow with k.

    Args:
      x: integer images ``[B, H, W, C]``.
      num_samples: k ≥ 1 (Python int or int32 scalar tensor).
      seed: TFP seed (int or stateless ``[2]`` tensor); None = fresh noise.
      images_per_pass: images per flow evaluation.
      labels: int class indices ``[B]`` (or a scalar) of a class-conditional
        model: the bound on log P(x | y).
      name: op name.

    Returns:
      float ``[B]`` bound in nats.
    """
    with tf.name_scope(name or 'importance_weighted_log_prob'):
      x = self._images(x)
      if x.shape.rank != 4:
        raise ValueError(f'{self.name}: importance_weighted_log_prob needs a '
                         f'[B, H, W, C] batch, got {x.shape}.')
      k = tf.convert_to_tensor(num_samples, tf.int32)
      tf.debugging.assert_positive(
          k, message='num_samples must be a positive integer')
      labels = self._labels(labels, tf.shape(x)[:1])
      seed = tfp.random.sanitize_seed(seed)
      batch = tf.shape(x)[0]
      per_pass = tf.constant(images_per_pass or _DEFAULT_IMAGES_PER_PASS)
      chunk = tf.maximum(1, tf.minimum(k, per_pass // tf.maximum(batch, 1)))
      num_chunks = (k + chunk - 1) // chunk
      tiled = tf.tile(x, [chunk, 1, 1, 1])
      tiled_labels = None if labels is None else tf.tile(labels, [chunk])
      neg_inf = tf.constant(-math.inf, self._float_dtype)

      def body(i, total):
        chunk_seed = tf.random.experimental.stateless_fold_in(seed, i)
        bound = tf.reshape(
            self._bound(tiled, chunk_seed, False, tiled_labels),
            [chunk, batch])
        draw_index = i * chunk + tf.range(chunk)[:, tf.newaxis]
        bound = tf.where(draw_index < k, bound, neg_inf)
        chunk_lse = tf.reduce_logsumexp(bound, axis=0)
        return i + 1, tf.reduce_logsumexp(tf.stack([total, chunk_lse]), 0)

      _, total = tf.while_loop(lambda i, _: i < num_chunks, body,
                               (tf.constant(0), tf.fill([batch], neg_inf)))
      return total - tf.math.log(tf.cast(k, self._float_dtype))

  def probability_mass_in_range(self,
                                num_samples=100_000,
                                seed=None,
                                batch_size=10_000,
                                label=None):
    """Monte-Carlo estimate of Σ_x P(x) = ∫_{[0, L]^D} p(y) dy.

    With the official preprocessing (alpha < 1) the continuous density has
    support slightly beyond [0, L]^D, so the discrete model sums to this
    value (< 1) and its bits/dim are conservative by
    ``−log2(mass) / D``; with ``preprocess_alpha = 1`` it is exactly 1.
    A class-conditional model needs the class: ``label`` (an int), giving
    Σ_x P(x | label).
    """
    seed = tfp.random.sanitize_seed(seed)
    inside, total = 0, 0
    for i in range(int(math.ceil(num_samples / batch_size))):
      n = min(batch_size, num_samples - total)
      y = self.decode_continuous(
          self.sample_latents(
              n, seed=tf.random.experimental.stateless_fold_in(seed, i),
              labels=label),
          labels=label)
      in_range = tf.logical_and(y >= 0., y <= float(self._num_levels))
      inside += int(
          tf.reduce_sum(
              tf.cast(tf.reduce_all(in_range, axis=[-3, -2, -1]), tf.int32)))
      total += n
    return inside / total

  def bits_per_dim(self,
                   x,
                   num_samples=1,
                   seed=None,
                   training=False,
                   labels=None):
    """``−bound / (D ln 2)``; k = 1 uses the single-sample bound."""
    if isinstance(num_samples, int) and num_samples == 1:
      bound = self.log_prob(x, seed=seed, training=training, labels=labels)
    else:
      bound = self.importance_weighted_log_prob(
          x, num_samples, seed=seed, labels=labels)
    return self.nats_to_bits_per_dim(bound)

  # Classes -------------------------------------------------------------------

  def class_log_likelihoods(self, x, num_samples=1, seed=None,
                            images_per_pass=None):
    """The bound on log P(x | y) for every class y, in nats: ``[B, K]``.

    Every class uses the same dequantization seed (common random numbers),
    so the differences between classes are not blurred by noise.

    Args:
      x: integer images ``[B, H, W, C]``.
      num_samples: k; 1 = the single-sample bound, else the
        importance-weighted bound (tighter, k times the cost).
      seed: TFP seed.
      images_per_pass: as in `importance_weighted_log_prob`.
    """
    classes = self._conditional('class likelihoods')
    x = self._images(x)
    if x.shape.rank != 4:
      raise ValueError(f'{self.name}: class_log_likelihoods needs a '
                       f'[B, H, W, C] batch, got {x.shape}.')
    seed = tfp.random.sanitize_seed(seed)
    columns = []
    for k in range(classes.num_classes):
      labels = tf.fill(tf.shape(x)[:1], k)
      if isinstance(num_samples, int) and num_samples == 1:
        columns.append(self._bound(x, seed, False, labels))
      else:
        columns.append(
            self.importance_weighted_log_prob(
                x, num_samples, seed=seed, images_per_pass=images_per_pass,
                labels=labels))
    return tf.stack(columns, axis=-1)

  def predict(self, x, num_samples=1, seed=None):
    """p(y | x) ∝ P(x | y) π_y (Bayes' rule): probabilities ``[B, K]``.

    π are the training class frequencies (`log_class_frequencies`); P(x | y)
    is estimated by `class_log_likelihoods` with ``num_samples``.
    """
    log_likelihoods = self.class_log_likelihoods(x, num_samples, seed=seed)
    return tf.nn.softmax(log_likelihoods + self.log_class_frequencies, axis=-1)

  def marginal_log_prob(self, x, num_samples=1, seed=None,
                        images_per_pass=None):
    """A bound on log P(x) that needs no labels, in nats: ``[B]``.

    For a class-conditional model it is ``log Σ_y π_y exp(b_y(x))``, where
    ``b_y`` is the bound of `class_log_likelihoods` (k = ``num_samples``) and
    π the training class frequencies: each ``exp(b_y)`` is an unbiased
    estimate of P(x | y), so the sum is one of P(x) = Σ_y π_y P(x | y) and
    its log a stochastic lower bound on log P(x) (K times the cost of one
    bound). For an unconditional model it is `log_prob` (k = 1) or
    `importance_weighted_log_prob`, so scoring code can call it on either.

    Args:
      x: integer images ``[B, H, W, C]``.
      num_samples: k per class; 1 = the single-sample bound.
      seed: TFP seed.
      images_per_pass: as in `importance_weighted_log_prob`.
    """
    if self._classes is None:
      if isinstance(num_samples, int) and num_samples == 1:
        return self.log_prob(x, seed=seed)
      return self.importance_weighted_log_prob(
          x, num_samples, seed=seed, images_per_pass=images_per_pass)
    joint = self.class_log_likelihoods(
        x, num_samples, seed=seed, images_per_pass=images_per_pass) + (
            tf.cast(self.log_class_frequencies, self._float_dtype))
    return tf.reduce_logsumexp(joint, axis=-1)

  def given(self, labels):
    """p(x | labels) as a `tfd.Distribution` whose batch shape is the labels'.

    ``given(y).log_prob(x)`` is ``log_prob(x, labels=y)`` and
    ``given(y).sample(n)`` draws ``[n, *y.shape, H, W, C]`` images of those
    classes, so a `tfd.JointDistributionSequential` /
    `tfd.JointDistributionCoroutine` with a `tfd.Categorical` label models
    p(x, y) (see the class docstring).
    """
    self._conditional('given(labels)')
    return _GivenLabels(self, labels)


  def nats_to_bits_per_dim(self, log_prob):
    """Converts a log-probability per image (nats) to bits per dimension."""
    return -log_prob / (self.num_dims * math.log(2.))

  # Sampling and latents ------------------------------------------------------

  def quantize(self, y):
    """Continuous values → int32 levels: ``clip(floor(y), 0, L − 1)``.

    Every pixel it returns is in [0, L). A NaN or ±Inf in ``y`` (an inverse
    flow that overflowed) has no level: it raises instead of becoming a
    pixel (a NaN would cast to −2³¹).

    Raises:
      tf.errors.InvalidArgumentError: ``y`` is not finite (when the op runs).
    """
    y = tf.debugging.assert_all_finite(
        y, f'{self.name}: decoded values are not finite (NaN or Inf; the '
        'inverse flow overflowed), so they have no pixel level; lower the '
        'temperature or check the latents')
    return tf.cast(
        tf.clip_by_value(tf.floor(y), 0., self._num_levels - 1.), tf.int32)

  def sample_latents(self, n, seed=None, temperature=1.0, labels=None):
    """``n`` prior draws with standard deviation ``temperature``.

    For a class-conditional model, draws of p(z | labels) (``labels`` [n]
    or one for all) with the prior's scale multiplied by ``temperature``.
    """
    labels = self._labels(labels, [n])
    z = self.prior.sample(n, seed=seed)
    z = z * tf.cast(temperature, self._float_dtype)
    if labels is not None:
      z = self._classes.latents(z, labels)
    return z

  def _sample_n(self, n, seed=None, temperature=1.0, labels=None):
    labels = self._labels(labels, [n])
    return self.decode(self.sample_latents(n, seed, temperature, labels),
                       labels=labels)

  def encode(self, x, noise='midpoint', seed=None, labels=None):
    """Images → latents ``z = flow(x + u)``.

    Args:
      x: integer images.
      noise: ``'midpoint'`` (u = 1/2, deterministic, so ``decode(encode(x))
        == x`` exactly) or ``'sample'`` (u ~ q(·|x)).
      seed: TFP seed for ``noise='sample'``.
      labels: class indices of a class-conditional model.
    """
    x = self._images(x)
    labels = self._labels(labels, tf.shape(x)[:-3])
    if noise == 'midpoint':
      u = tf.fill(tf.shape(x), tf.constant(0.5, self._float_dtype))
    elif noise == 'sample':
      u, _ = self._dequantizer.sample_and_log_prob(
          x, seed=seed, label_context=self._dequantizer_context(labels))
    else:
      raise ValueError(f"noise must be 'midpoint' or 'sample', got {noise!r}.")
    return self._bijector.forward(x + u, **self._flow_kwargs(False, labels))

  def encode_continuous(self, y, labels=None):
    """Continuous inputs in [0, L]^D → latents."""
    y = tf.convert_to_tensor(y, self._float_dtype)
    labels = self._labels(labels, tf.shape(y)[:-3])
    return self._bijector.forward(y, **self._flow_kwargs(False, labels))

  def decode_continuous(self, z, labels=None):
    """Latents → continuous values in (approximately) [0, L]^D."""
    z = tf.convert_to_tensor(z, self._float_dtype)
    labels = self._labels(labels, tf.shape(z)[:-3])
    return self._bijector.inverse(z, **self._flow_kwargs(False, labels))

  def decode(self, z, labels=None):
    """Latents → int32 images in [0, L) (raises on non-finite, `quantize`)."""
    return self.quantize(self.decode_continuous(z, labels=labels))

  def interpolate(self, x_start, x_end, num_steps=8, labels=None):
    """Linear latent interpolation between two batches of images.

    Returns int32 images ``[B, num_steps, H, W, C]``; the first and last
    columns reproduce ``x_start`` and ``x_end`` exactly. A class-conditional
    model interpolates within the classes ``labels`` ([B] or one for all),
    the same at both ends.
    """
    x_start = self._images(x_start)
    labels = self._labels(labels, tf.shape(x_start)[:1])
    z0 = self.encode(x_start, labels=labels)
    z1 = self.encode(x_end, labels=labels)
    weights = tf.linspace(tf.constant(0., self._float_dtype), 1., num_steps)
    weights = tf.reshape(weights, [1, num_steps, 1, 1, 1])
    z = z0[:, tf.newaxis] * (1. - weights) + z1[:, tf.newaxis] * weights
    if labels is not None:
      labels = tf.broadcast_to(labels[:, tf.newaxis], tf.shape(z)[:2])
    return self.decode(z, labels=labels)

  # Data-dependent initialisation ---------------------------------------------

  def actnorm_layers(self):
    """All `ActNorm` bijectors of the flow and the dequantizer."""
    return [m for m in self.submodules if isinstance(m, actnorm.ActNorm)]

  def initialize(self, x, seed=None, labels=None, class_counts=None):
    """Data-dependent initialisation of every `ActNorm` from the batch ``x``.

    Re-initialises even if already initialised. Call it eagerly (or in the
    cross-replica context of a `tf.distribute` strategy) before training;
    returns the bound on ``x`` after initialisation. A class-conditional
    model needs the batch's ``labels`` and may take the training set's
    ``class_counts`` ``[K]`` (its p(y) for `predict`; default: the batch's).
    """
    if self._classes is not None and labels is not None:
      if class_counts is None:
        class_counts = np.bincount(
            np.asarray(labels).reshape(-1), minlength=self.num_classes)
      self._classes.set_class_counts(class_counts)
    for layer in self.actnorm_layers():
      layer.reset_initialization()
    return self.log_prob(x, seed=seed, labels=labels)


class _GivenLabels(tfd.Distribution):
  """p(x | y) of a class-conditional `DiscreteImageFlow`, y fixed."""

  def __init__(self, model, labels, name='given_labels'):
    parameters = dict(locals())
    self._model = model
    self._given = model.class_conditioning.check_labels(labels)
    super().__init__(
        dtype=tf.int32,
        reparameterization_type=tfd.NOT_REPARAMETERIZED,
        validate_args=False,
        allow_nan_stats=False,
        parameters=parameters,
        name=name)

  @property
  def labels(self):
    return self._given

  def _event_shape(self):
    return tf.TensorShape(self._model.image_shape)

  def _event_shape_tensor(self):
    return tf.constant(self._model.image_shape, tf.int32)

  def _batch_shape(self):
    return self._given.shape

  def _batch_shape_tensor(self):
    return tf.shape(self._given)

  def _log_prob(self, x, seed=None, training=False):
    return self._model.log_prob(
        x, seed=seed, training=training, labels=self._given)

  def _sample_n(self, n, seed=None, temperature=1.0):
    flat = tf.reshape(
        tf.broadcast_to(self._given, tf.concat([[n], tf.shape(self._given)],
                                               0)), [-1])
    images = self._model.sample(
        tf.size(flat), seed=seed, temperature=temperature, labels=flat)
    return tf.reshape(
        images,
        tf.concat([[n], tf.shape(self._given), self._model.image_shape], 0))
