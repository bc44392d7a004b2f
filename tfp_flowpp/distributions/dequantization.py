"""Dequantization noise distributions q(u | x) over u ∈ (0, 1)^D.

A continuous density p on R^D assigns the discrete image x the probability
``P(x) = ∫_{[0,1)^D} p(x + u) du``. For any density q(u | x) on the unit cube,
Jensen's inequality gives the variational lower bound (Ho et al. 2019, §3.1)

    log P(x) ≥ E_{u ~ q(·|x)} [log p(x + u) − log q(u | x)].

* `UniformDequantizer`: q = U[0, 1)^D, ``log q = 0`` (Theis et al. 2016).
* `VariationalDequantizer`: Flow++'s learned q. A Gaussian ε is pushed
  through a flow of couplings (with norm / 1×1 conv) whose networks all
  receive features of x, then squashed into (0, 1)::

      u = s(f(ε; context(x))),   log q(u|x) = log N(ε) − log|det ∂u/∂ε|.

  The official code uses s = sigmoid; with near-identity couplings q then
  starts logit-normal, whose tails at u → 0, 1 are lighter than any power,
  so the importance weights p/q have infinite variance (measured: effective
  sample size 7% of the draws at initialisation). The default s = Φ (the
  standard normal CDF) makes q start as *exactly* uniform dequantization
  (ESS ≈ 94%) — learning then only improves on the uniform bound.

  It is a `tfd.TransformedDistribution` over u whose couplings take the
  context as a conditioning keyword argument, routed by bijector name the
  way TFP routes ``bijector_kwargs``.
"""

import tensorflow as tf
import tensorflow_probability as tfp

from tfp_flowpp.bijectors import conditioning

tfb = tfp.bijectors
tfd = tfp.distributions

__all__ = ['UniformDequantizer', 'VariationalDequantizer']


def _batch_shape(x):
  return tf.shape(x)[:-3]


class UniformDequantizer(tf.Module):
  """u ~ U[0, 1)^D independent of x; ``log q(u|x) = 0``."""

  def __init__(self, image_shape, dtype=tf.float32, name='uniform_dequantizer'):
    super().__init__(name=name)
    self.image_shape = tuple(int(d) for d in image_shape)
    self.dtype = tf.as_dtype(dtype)
    self.distribution = tfd.Sample(
        tfd.Uniform(tf.constant(0., self.dtype), tf.constant(1., self.dtype)),
        sample_shape=self.image_shape)

  def sample_and_log_prob(self, x, seed=None, training=False):
    """Returns ``(u, log q(u|x))`` for a batch of images ``x``."""
    del training
    seed = tfp.random.sanitize_seed(seed)
    u = tf.random.stateless_uniform(tf.shape(x), seed=seed, dtype=self.dtype)
    return u, tf.zeros(_batch_shape(x), self.dtype)


class VariationalDequantizer(tf.Module):
  """Flow++ variational dequantization as a conditional TFP flow."""

  def __init__(self,
               flow_bijector,
               context_network,
               context_layout,
               image_shape,
               num_levels,
               squash='normal_cdf',
               dtype=tf.float32,
               name='variational_dequantizer'):
    """Creates q(u | x).

    Args:
      flow_bijector: bijector mapping ε (image-shaped) to pre-sigmoid noise;
        its couplings accept ``context`` and ``training`` kwargs.
      context_network: `tf.Module` mapping the paired-layout image
        ``[N, H, W', 2C']`` to context features ``[N, H, W', F_c]``.
      context_layout: the split bijector that produces that paired layout
        (the same split the dequantizer's couplings use).
      image_shape: ``(H, W, C)``.
      num_levels: L; the context sees ``x / L − 0.5``.
      squash: ``'normal_cdf'`` or ``'sigmoid'`` (see module docstring).
      dtype: float dtype.
      name: module name.
    """
    super().__init__(name=name)
    self.image_shape = tuple(int(d) for d in image_shape)
    self.num_levels = int(num_levels)
    self.dtype = tf.as_dtype(dtype)
    self.context_network = context_network
    self.context_layout = context_layout
    squashes = {'normal_cdf': tfb.NormalCDF, 'sigmoid': tfb.Sigmoid}
    if squash not in squashes:
      raise ValueError(f'squash must be one of {sorted(squashes)}, got '
                       f'{squash!r}.')
    self.bijector = tfb.Chain([squashes[squash](), flow_bijector],
                              name='dequantizer_flow')
    base = tfd.Sample(
        tfd.Normal(tf.constant(0., self.dtype), tf.constant(1., self.dtype)),
        sample_shape=self.image_shape)
    self.distribution = tfd.TransformedDistribution(
        base, self.bijector, name='q_u_given_x')

  def context(self, x, training=False):
    """Features of the discrete image the dequantizer's couplings see."""
    scaled = tf.cast(x, self.dtype) / self.num_levels - 0.5
    return self.context_network(
        self.context_layout.forward(scaled), training=training)

  def bijector_kwargs(self, x, training=False):
    """``bijector_kwargs`` that condition `distribution` on the image x."""
    return conditioning.conditional_kwargs(
        self.bijector,
        context=self.context(x, training=training),
        training=training)

  def sample_and_log_prob(self, x, seed=None, training=False):
    """Draws ``u ~ q(·|x)`` (one per image) and returns ``(u, log q(u|x))``."""
    return self.distribution.experimental_sample_and_log_prob(
        _batch_shape(x),
        seed=seed,
        bijector_kwargs=self.bijector_kwargs(x, training=training))
