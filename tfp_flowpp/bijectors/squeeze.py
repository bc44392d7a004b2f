"""Squeeze: space-to-depth (RealNVP §3.6, Glow, Flow++).

Trades spatial resolution for channels: ``[H, W, C] → [H/f, W/f, f²·C]``
with `tf.nn.space_to_depth` (f = 2 by default). A permutation, so the
log-det is zero. Inverse: `tf.nn.depth_to_space`.
"""

import tensorflow as tf

from tfp_flowpp.bijectors import rearrangement

__all__ = ['Squeeze']


def _as_4d(x):
  shape = tf.shape(x)
  return tf.reshape(x, tf.concat([[-1], shape[-3:]], 0)), shape[:-3]


class Squeeze(rearrangement.Rearrangement):
  """Space-to-depth with block size ``factor``."""

  def __init__(self,
               event_shape,
               factor=2,
               validate_args=False,
               name='squeeze'):
    parameters = dict(locals())
    h, w, c = (int(d) for d in event_shape)
    if h % factor or w % factor:
      raise ValueError(f'Squeeze by {factor} needs H and W divisible by '
                       f'{factor}; got {tuple(event_shape)}.')
    self._factor = int(factor)
    super().__init__(event_shape,
                     (h // factor, w // factor, c * factor * factor),
                     validate_args, parameters, name)

  def _forward(self, x):
    x4, batch = _as_4d(x)
    y = tf.nn.space_to_depth(x4, self._factor)
    return tf.reshape(y, tf.concat([batch, self._out_shape], 0))

  def _inverse(self, y):
    y4, batch = _as_4d(y)
    x = tf.nn.depth_to_space(y4, self._factor)
    return tf.reshape(x, tf.concat([batch, self._event_shape_tuple], 0))
