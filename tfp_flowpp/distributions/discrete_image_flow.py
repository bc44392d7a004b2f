"""`DiscreteImageFlow`: a `tfd.Distribution` over images with L levels per pixel.

A continuous flow density over [0, L)^D plus a dequantizer q(u | x), with
dequantization and importance-weighted bounds, sampling and latents; see
`DiscreteImageFlow`.
"""

import math

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

  def _flow_kwargs(self, training):
    return conditioning.conditional_kwargs(
        self._flow.bijector, training=training)

  # Densities -----------------------------------------------------------------

  def continuous_log_prob(self, y, training=False):
    """log p(y) of the continuous flow at dequantized inputs ``y ∈ [0, L]^D``."""
    return self._flow.log_prob(y, bijector_kwargs=self._flow_kwargs(training))

  def _bound(self, x, seed, training):
    if training is True:
      # Stateless dropout masks from the step's seed (see `networks.blocks`).
      training = tf.random.experimental.stateless_fold_in(
          tfp.random.sanitize_seed(seed), _DROPOUT_SEED_TAG)
    u, log_q = self._dequantizer.sample_and_log_prob(
        x, seed=seed, training=training)
    return self.continuous_log_prob(x + u, training=training) - log_q

  def _log_prob(self, x, seed=None, training=False):
    """Single-sample dequantization lower bound on log P(x), in nats."""
    return self._bound(self._images(x), seed, training)

  def importance_weighted_log_prob(self,
                                   x,
                                   num_samples,
                                   seed=None,
                                   images_per_pass=None,
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
      seed = tfp.random.sanitize_seed(seed)
      batch = tf.shape(x)[0]
      per_pass = tf.constant(images_per_pass or _DEFAULT_IMAGES_PER_PASS)
      chunk = tf.maximum(1, tf.minimum(k, per_pass // tf.maximum(batch, 1)))
      num_chunks = (k + chunk - 1) // chunk
      tiled = tf.tile(x, [chunk, 1, 1, 1])
      neg_inf = tf.constant(-math.inf, self._float_dtype)

      def body(i, total):
        chunk_seed = tf.random.experimental.stateless_fold_in(seed, i)
        bound = tf.reshape(
            self._bound(tiled, chunk_seed, False), [chunk, batch])
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
                                batch_size=10_000):
    """Monte-Carlo estimate of Σ_x P(x) = ∫_{[0, L]^D} p(y) dy.

    With the official preprocessing (alpha < 1) the continuous density has
    support slightly beyond [0, L]^D, so the discrete model sums to this
    value (< 1) and its bits/dim are conservative by
    ``−log2(mass) / D``; with ``preprocess_alpha = 1`` it is exactly 1.
    """
    seed = tfp.random.sanitize_seed(seed)
    inside, total = 0, 0
    for i in range(int(math.ceil(num_samples / batch_size))):
      n = min(batch_size, num_samples - total)
      y = self._flow.sample(
          n, seed=tf.random.experimental.stateless_fold_in(seed, i))
      in_range = tf.logical_and(y >= 0., y <= float(self._num_levels))
      inside += int(
          tf.reduce_sum(
              tf.cast(tf.reduce_all(in_range, axis=[-3, -2, -1]), tf.int32)))
      total += n
    return inside / total

  def bits_per_dim(self, x, num_samples=1, seed=None, training=False):
    """``−bound / (D ln 2)``; k = 1 uses the single-sample bound."""
    if isinstance(num_samples, int) and num_samples == 1:
      bound = self.log_prob(x, seed=seed, training=training)
    else:
      bound = self.importance_weighted_log_prob(x, num_samples, seed=seed)
    return self.nats_to_bits_per_dim(bound)

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

  def sample_latents(self, n, seed=None, temperature=1.0):
    """``n`` prior draws with standard deviation ``temperature``."""
    z = self.prior.sample(n, seed=seed)
    return z * tf.cast(temperature, self._float_dtype)

  def _sample_n(self, n, seed=None, temperature=1.0):
    return self.decode(self.sample_latents(n, seed, temperature))

  def encode(self, x, noise='midpoint', seed=None):
    """Images → latents ``z = flow(x + u)``.

    Args:
      x: integer images.
      noise: ``'midpoint'`` (u = 1/2, deterministic, so ``decode(encode(x))
        == x`` exactly) or ``'sample'`` (u ~ q(·|x)).
      seed: TFP seed for ``noise='sample'``.
    """
    x = self._images(x)
    if noise == 'midpoint':
      u = tf.fill(tf.shape(x), tf.constant(0.5, self._float_dtype))
    elif noise == 'sample':
      u, _ = self._dequantizer.sample_and_log_prob(x, seed=seed)
    else:
      raise ValueError(f"noise must be 'midpoint' or 'sample', got {noise!r}.")
    return self.encode_continuous(x + u)

  def encode_continuous(self, y):
    """Continuous inputs in [0, L]^D → latents."""
    return self._bijector.forward(
        tf.convert_to_tensor(y, self._float_dtype), **self._flow_kwargs(False))

  def decode_continuous(self, z):
    """Latents → continuous values in (approximately) [0, L]^D."""
    return self._bijector.inverse(
        tf.convert_to_tensor(z, self._float_dtype), **self._flow_kwargs(False))

  def decode(self, z):
    """Latents → int32 images in [0, L) (raises on non-finite, `quantize`)."""
    return self.quantize(self.decode_continuous(z))

  def interpolate(self, x_start, x_end, num_steps=8):
    """Linear latent interpolation between two batches of images.

    Returns int32 images ``[B, num_steps, H, W, C]``; the first and last
    columns reproduce ``x_start`` and ``x_end`` exactly.
    """
    z0 = self.encode(x_start)
    z1 = self.encode(x_end)
    weights = tf.linspace(tf.constant(0., self._float_dtype), 1., num_steps)
    weights = tf.reshape(weights, [1, num_steps, 1, 1, 1])
    z = z0[:, tf.newaxis] * (1. - weights) + z1[:, tf.newaxis] * weights
    return self.decode(z)

  # Data-dependent initialisation ---------------------------------------------

  def actnorm_layers(self):
    """All `ActNorm` bijectors of the flow and the dequantizer."""
    return [m for m in self.submodules if isinstance(m, actnorm.ActNorm)]

  def initialize(self, x, seed=None):
    """Data-dependent initialisation of every `ActNorm` from the batch ``x``.

    Re-initialises even if already initialised. Call it eagerly (or in the
    cross-replica context of a `tf.distribute` strategy) before training;
    returns the bound on ``x`` after initialisation.
    """
    for layer in self.actnorm_layers():
      layer.reset_initialization()
    return self.log_prob(x, seed=seed)
