"""Affine coupling (RealNVP, Dinh et al. 2017; Glow, Kingma & Dhariwal 2018).

    y_a = x_a
    y_b = x_b · scale(x_a) + shift(x_a),     log|det J| = Σ log scale

Two scale parameterisations:
  * ``'exp_tanh'``: ``scale = exp(tanh(h))`` — the Flow++ affine ablation and
    the coupling inside its MixLogistic layer (bounded log-scale ∈ (−1, 1));
  * ``'sigmoid'``: ``scale = sigmoid(h + 2)`` — Glow's choice (scale < 1,
    starts near 0.88).

Network output layout per transformed channel: ``[h, shift]``.
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
  """RealNVP/Glow affine coupling on channel halves."""

  params_per_channel = 2

  def __init__(self,
               network,
               event_shape,
               scale_fn='exp_tanh',
               validate_args=False,
               name='affine_coupling'):
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
