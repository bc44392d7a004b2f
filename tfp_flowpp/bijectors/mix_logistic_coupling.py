"""The Flow++ mixture-of-logistics CDF coupling (Ho et al. 2019, eq. 6).

    y_a = x_a
    y_b = σ⁻¹(MixLogCDF(x_b; π, μ, s)) · exp(a) + b

with ``π, μ, s, a, b`` predicted per element of ``x_b`` by a network of
``x_a`` (and an optional context). As in the official code ``a = tanh(·)``
and mixture log-scales are clamped at ``-7``. The log-det is

    Σ [ log f(x_b) − log F(x_b) − log(1 − F(x_b)) + a ]

evaluated entirely in log space (`mixture_cdf.py`), finite for all finite
inputs. The forward direction (data → latent, the paper's direction) is
analytic; the inverse solves ``logit F(x) = (y − b)·exp(−a)`` with TFP's
Chandrupatla root finder on an exact bracket and carries implicit-function
gradients.

Network output layout per transformed channel (matching the official code):
``[a_raw, b, logits_1..K, means_1..K, log_scales_1..K]``.
"""

import tensorflow as tf

from tfp_flowpp.bijectors import coupling
from tfp_flowpp.bijectors import mixture_cdf

__all__ = ['MixLogisticCoupling']


class MixLogisticCoupling(coupling.CouplingBijector):
  """Flow++ coupling: mixture-of-logistics CDF, logit, then elementwise affine."""

  def __init__(self,
               network,
               event_shape,
               num_components,
               min_log_scale=-7.,
               root_tolerance=None,
               max_root_iterations=100,
               validate_args=False,
               name='mix_logistic_coupling'):
    """Creates the coupling.

    Args:
      network: see `CouplingBijector`; must output ``(C/2)·(2 + 3K)`` channels.
      event_shape: paired-layout ``(H, W, C)``.
      num_components: ``K``, logistic components per element.
      min_log_scale: clamp for the mixture log-scales (official: -7).
      root_tolerance: absolute x tolerance of the inverse (per dtype default).
      max_root_iterations: cap on root-finder iterations.
      validate_args: check shapes at run time.
      name: bijector name (routing key for ``context``/``training``).
    """
    parameters = dict(locals())
    self._num_components = int(num_components)
    self._min_log_scale = float(min_log_scale)
    self._root_tolerance = root_tolerance
    self._max_root_iterations = int(max_root_iterations)
    self.params_per_channel = 2 + 3 * self._num_components
    super().__init__(
        network,
        event_shape,
        validate_args=validate_args,
        parameters=parameters,
        name=name)

  @classmethod
  def params_per_channel_from_config(cls, config):
    """``2 + 3K`` with ``K = config.components``."""
    return 2 + 3 * int(config.components)

  @classmethod
  def from_config(cls, network, event_shape, config, name):
    """The coupling with ``config.components`` logistics per element."""
    return cls(network, event_shape, config.components, name=name)

  @property
  def num_components(self):
    return self._num_components

  def _unpack(self, params):
    k = self._num_components
    # One split (gradient: one concat) rather than five strided slices, each
    # of whose gradients would be a zero-padded full-size tensor.
    a_raw, shift, logits, means, log_scales = tf.split(
        params, [1, 1, k, k, k], axis=-1)
    log_scale_affine = tf.tanh(tf.squeeze(a_raw, -1))
    log_weights = tf.nn.log_softmax(logits, axis=-1)
    log_scales = tf.maximum(log_scales, self._min_log_scale)
    return (log_scale_affine, tf.squeeze(shift, -1), log_weights, means,
            log_scales)

  def _coupling_forward(self, x_b, params):
    a, b, log_weights, means, log_scales = self._unpack(params)
    terms = mixture_cdf.mixture_logistic_terms(x_b, log_weights, means,
                                               log_scales)
    y_b = terms.logit_cdf * tf.exp(a) + b
    return y_b, coupling.sum_event(terms.log_derivative + a)

  def _coupling_inverse(self, y_b, params):
    a, b, log_weights, means, log_scales = self._unpack(params)
    target = (y_b - b) * tf.exp(-a)
    result = mixture_cdf.invert_mixture_logistic_logit_cdf(
        target,
        log_weights,
        means,
        log_scales,
        position_tolerance=self._root_tolerance,
        max_iterations=self._max_root_iterations)
    terms = mixture_cdf.mixture_logistic_terms(result.x, log_weights, means,
                                               log_scales)
    return result.x, -coupling.sum_event(terms.log_derivative + a)
