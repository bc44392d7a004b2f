"""The Flow++ mixture-of-logistics CDF coupling (Ho et al. 2019, §3.2).

Analytic in the data → latent direction, inverted by a bracketed root finder
with implicit gradients; see `MixLogisticCoupling`.
"""

import tensorflow as tf

from tfp_flowpp.bijectors import coupling
from tfp_flowpp.bijectors import mixture_cdf

__all__ = ['MixLogisticCoupling']


class MixLogisticCoupling(coupling.CouplingBijector):
  """Flow++ coupling: mixture-of-logistics CDF, logit, then elementwise affine.

  The coupling of [(Ho et al., 2019)][1], §3.2, on the paired layout of
  `CouplingBijector`. For every element of ``x_b`` the network of ``x_a``
  (and an optional context) predicts ``a_raw``, ``b`` and, for K logistic
  components, logits ``l_k``, means ``μ_k`` and log-scales ``log s_k``. With

  ```none
  a = tanh(a_raw),   π = softmax(l),   s_k = exp(max(log s_k, min_log_scale))
  F(x) = Σ_k π_k sigmoid((x − μ_k) / s_k),   f = dF/dx
  ```

  the coupling is

  ```none
  forward:  y_b = logit(F(x_b)) · exp(a) + b
  inverse:  x_b = the root x of logit(F(x)) = (y_b − b) · exp(−a)
  log|det ∂y/∂x| = Σ_{h,w,c} [log f(x_b) − log F(x_b) − log(1 − F(x_b)) + a]
  ```

  As in the official code, ``a = tanh(·)`` and the mixture log-scales are
  clamped at ``min_log_scale`` (−7). The log-det is evaluated entirely in
  log space from softplus terms (`mixture_cdf.mixture_logistic_terms`), so
  it is finite for all finite inputs; the official code takes the logit of
  ``F = exp(log F)``, which is +inf in float32 once ``logit F`` exceeds ~17.

  The forward direction (data → latent, the paper's) is analytic. The
  inverse hands the exact bracket ``[min_k(μ_k + s_k t), max_k(μ_k + s_k t)]``
  of the root to TFP's Chandrupatla root finder
  (`mixture_cdf.invert_mixture_logistic_logit_cdf`) and carries
  implicit-function gradients, so samples are differentiable with respect to
  the network parameters.

  Network output layout per transformed channel (matching the official
  code): ``[a_raw, b, logits_1..K, means_1..K, log_scales_1..K]``, i.e.
  ``(C/2)·(2 + 3K)`` channels. A network whose outputs start near zero (as
  `FlowppCouplingNetwork`'s do) makes every component the standard logistic,
  whose logit-CDF is the identity, so the coupling starts near the identity.

  #### Examples

  >>> import numpy as np
  >>> import tensorflow as tf
  >>> from tfp_flowpp import bijectors as fb
  >>> from tfp_flowpp import networks as fn
  >>> config = fn.GatedResNetConfig(filters=4, blocks=1, mixer='none')
  >>> network = fn.FlowppCouplingNetwork(  # (C/2)·(2 + 3K) = 11 outputs.
  ...     (2, 2, 1), 11, config, init_scale=1., rng=np.random.default_rng(0))
  >>> coupling = fb.MixLogisticCoupling(network, (2, 2, 2), num_components=3)
  >>> x = tf.random.stateless_normal([1, 2, 2, 2], seed=[1, 2])
  >>> with tf.GradientTape() as tape:
  ...   tape.watch(x)
  ...   y = coupling.forward(x)
  >>> jacobian = tf.reshape(tape.jacobian(y, x), [8, 8])
  >>> np.allclose(coupling.forward_log_det_jacobian(x, event_ndims=3),
  ...             np.linalg.slogdet(jacobian)[1], atol=1e-4)
  True
  >>> # A new tensor, so the root finder really runs:
  >>> np.allclose(coupling.inverse(tf.identity(y)), x, atol=1e-5)
  True

  #### References

  [1]: Jonathan Ho, Xi Chen, Aravind Srinivas, Yan Duan and Pieter Abbeel.
       Flow++: Improving Flow-Based Generative Models with Variational
       Dequantization and Architecture Design. In _International Conference
       on Machine Learning_, 2019. https://arxiv.org/abs/1902.00275
  """

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
      root_tolerance: ``x`` tolerance of the inverse, relative to the root's
        magnitude above 1 and absolute below; None = two ulps of the dtype.
      max_root_iterations: cap on root-finder iterations.
      validate_args: Python `bool`, check input shapes at run time too.
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
