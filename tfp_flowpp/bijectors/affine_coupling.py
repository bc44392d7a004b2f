"""Affine coupling (RealNVP, Dinh et al. 2017; Glow, Kingma & Dhariwal 2018).

A scale-and-shift of one channel half conditioned on the other, with the
Flow++ (``exp_tanh``) or Glow (``sigmoid``) scale; see `AffineCoupling`.
"""

import tensorflow as tf

from tfp_flowpp.bijectors import coupling

__all__ = ['AffineCoupling', 'SCALE_FNS']


def _exp_tanh_log_scale(h):
  """scale = exp(tanh(h)), log-scale in (−1, 1) (Flow++, RealNVP)."""
  return tf.tanh(h)


def _sigmoid_log_scale(h):
  """scale = sigmoid(h + 2), in (0, 1) and 0.88 at h = 0 (Glow)."""
  return tf.math.log_sigmoid(h + 2.)


# ``scale_fn`` name -> function of the raw network output giving log(scale).
SCALE_FNS = {
    'exp_tanh': _exp_tanh_log_scale,
    'sigmoid': _sigmoid_log_scale,
}


class AffineCoupling(coupling.CouplingBijector):
  """RealNVP/Glow affine coupling on channel halves.

  The affine coupling of [(Dinh et al., 2017)][1] on the paired layout of
  `CouplingBijector`. The network maps ``x_a`` to ``[h, t]`` per transformed
  element (``params_per_channel = 2``, in that order) and

  ```none
  forward:  y_a = x_a,   y_b = x_b · s + t
  inverse:  x_a = y_a,   x_b = (y_b − t) / s
  log|det ∂y/∂x| = Σ_{h,w,c} log s
  ```

  with one of two scale parameterisations (``scale_fn``):

  * ``'exp_tanh'``: ``s = exp(tanh(h))``, a bounded log-scale in (−1, 1) --
    the coupling of the Flow++ no-mixture ablation and the elementwise
    affine inside its mixture-of-logistics coupling [(Ho et al., 2019)][3];
  * ``'sigmoid'``: ``s = sigmoid(h + 2)`` in (0, 1), Glow's choice
    [(Kingma & Dhariwal, 2018)][2]; it starts near ``sigmoid(2) ≈ 0.88``.

  The log-scale is computed as ``tanh(h)`` or ``log_sigmoid(h + 2)``
  directly, never as the log of a rounded scale.

  #### Examples

  >>> import numpy as np
  >>> import tensorflow as tf
  >>> from tfp_flowpp import bijectors as fb
  >>> from tfp_flowpp import networks as fn
  >>> config = fn.GatedResNetConfig(filters=4, blocks=1, mixer='none')
  >>> network = fn.FlowppCouplingNetwork(
  ...     (2, 2, 1), 2, config, init_scale=1., rng=np.random.default_rng(0))
  >>> coupling = fb.AffineCoupling(network, (2, 2, 2), scale_fn='sigmoid')
  >>> x = tf.random.stateless_normal([1, 2, 2, 2], seed=[1, 2])
  >>> with tf.GradientTape() as tape:
  ...   tape.watch(x)
  ...   y = coupling.forward(x)
  >>> jacobian = tf.reshape(tape.jacobian(y, x), [8, 8])
  >>> np.allclose(coupling.forward_log_det_jacobian(x, event_ndims=3),
  ...             np.linalg.slogdet(jacobian)[1], atol=1e-5)
  True
  >>> np.allclose(coupling.inverse(tf.identity(y)), x, atol=1e-6)
  True

  #### References

  [1]: Laurent Dinh, Jascha Sohl-Dickstein and Samy Bengio. Density
       Estimation using Real NVP. In _International Conference on Learning
       Representations_, 2017. https://arxiv.org/abs/1605.08803

  [2]: Diederik P. Kingma and Prafulla Dhariwal. Glow: Generative Flow with
       Invertible 1x1 Convolutions. In _Neural Information Processing
       Systems_, 2018. https://arxiv.org/abs/1807.03039

  [3]: Jonathan Ho, Xi Chen, Aravind Srinivas, Yan Duan and Pieter Abbeel.
       Flow++: Improving Flow-Based Generative Models with Variational
       Dequantization and Architecture Design. In _International Conference
       on Machine Learning_, 2019. https://arxiv.org/abs/1902.00275
  """

  params_per_channel = 2

  def __init__(self,
               network,
               event_shape,
               scale_fn='exp_tanh',
               validate_args=False,
               name='affine_coupling'):
    """Creates the coupling.

    Args:
      network: see `CouplingBijector`; outputs ``(C/2)·2`` channels, ``[h, t]``
        per transformed channel.
      event_shape: paired-layout ``(H, W, C)``, ``C`` even.
      scale_fn: ``'exp_tanh'`` (Flow++) or ``'sigmoid'`` (Glow).
      validate_args: Python `bool`, check input shapes at run time too.
      name: bijector name (routing key for ``context``/``training``).

    Raises:
      ValueError: for an unknown ``scale_fn``.
    """
    parameters = dict(locals())
    if scale_fn not in SCALE_FNS:
      raise ValueError(f'scale_fn must be one of {tuple(SCALE_FNS)}, got '
                       f'{scale_fn!r}.')
    self._scale_fn = scale_fn
    super().__init__(
        network,
        event_shape,
        validate_args=validate_args,
        parameters=parameters,
        name=name)

  @classmethod
  def from_config(cls, network, event_shape, config, name):
    """The coupling with ``scale_fn=config.affine_scale``."""
    return cls(network, event_shape, scale_fn=config.affine_scale, name=name)

  def _log_scale_and_shift(self, params):
    h, shift = tf.unstack(params, axis=-1)
    return SCALE_FNS[self._scale_fn](h), shift

  def _coupling_forward(self, x_b, params):
    log_scale, shift = self._log_scale_and_shift(params)
    return x_b * tf.exp(log_scale) + shift, coupling.sum_event(log_scale)

  def _coupling_inverse(self, y_b, params):
    log_scale, shift = self._log_scale_and_shift(params)
    return (y_b - shift) * tf.exp(-log_scale), -coupling.sum_event(log_scale)
