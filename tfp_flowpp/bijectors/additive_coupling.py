"""Additive coupling (NICE, Dinh, Krueger & Bengio 2015).

    y_a = x_a
    y_b = x_b + m(x_a),        log|det J| = 0

Volume preserving; NICE pairs it with a final diagonal scaling layer (here a
per-element `ActNorm`). Network output layout per channel: ``[m]``.
"""

import tensorflow as tf

from tfp_flowpp.bijectors import coupling

__all__ = ['AdditiveCoupling']


class AdditiveCoupling(coupling.CouplingBijector):
  """NICE additive coupling on channel halves."""

  params_per_channel = 1

  def __init__(self,
               network,
               event_shape,
               validate_args=False,
               name='additive_coupling'):
    parameters = dict(locals())
    super().__init__(
        network,
        event_shape,
        validate_args=validate_args,
        parameters=parameters,
        name=name)

  def _coupling_forward(self, x_b, params):
    zero = tf.zeros(tf.shape(x_b)[:-3], x_b.dtype)
    return x_b + params[..., 0], zero

  def _coupling_inverse(self, y_b, params):
    zero = tf.zeros(tf.shape(y_b)[:-3], y_b.dtype)
    return y_b - params[..., 0], zero
