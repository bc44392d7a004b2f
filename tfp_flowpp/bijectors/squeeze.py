"""Squeeze: space-to-depth (RealNVP §3.6, Glow, Flow++).

Trades spatial resolution for channels: ``[H, W, C] → [H/f, W/f, f²·C]``
with `tf.nn.space_to_depth` (f = 2 by default). A permutation, so the
log-det is zero. Inverse: `tf.nn.depth_to_space`.
"""

import tensorflow as tf
import tensorflow_probability as tfp

tfb = tfp.bijectors

__all__ = ['Squeeze']


def _as_4d(x):
  shape = tf.shape(x)
  return tf.reshape(x, tf.concat([[-1], shape[-3:]], 0)), shape[:-3]


class Squeeze(tfb.Bijector):
  """Space-to-depth with block size ``factor``."""

  def __init__(self,
               event_shape,
               factor=2,
               validate_args=False,
               name='squeeze'):
    parameters = dict(locals())
    self._event_shape_tuple = tuple(int(d) for d in event_shape)
    h, w, c = self._event_shape_tuple
    if h % factor or w % factor:
      raise ValueError(f'Squeeze by {factor} needs H and W divisible by '
                       f'{factor}; got {self._event_shape_tuple}.')
    self._factor = int(factor)
    self._out_shape = (h // factor, w // factor, c * factor * factor)
    with tf.name_scope(name) as name:
      super().__init__(
          forward_min_event_ndims=3,
          is_constant_jacobian=True,
          validate_args=validate_args,
          parameters=parameters,
          name=name)

  @property
  def output_shape(self):
    return self._out_shape

  def _forward(self, x):
    x4, batch = _as_4d(x)
    y = tf.nn.space_to_depth(x4, self._factor)
    return tf.reshape(y, tf.concat([batch, self._out_shape], 0))

  def _inverse(self, y):
    y4, batch = _as_4d(y)
    x = tf.nn.depth_to_space(y4, self._factor)
    return tf.reshape(x, tf.concat([batch, self._event_shape_tuple], 0))

  def _forward_log_det_jacobian(self, x):
    return tf.zeros([], x.dtype)

  def _forward_event_shape(self, input_shape):
    return tf.TensorShape(self._out_shape)

  def _inverse_event_shape(self, output_shape):
    return tf.TensorShape(self._event_shape_tuple)

  def _forward_event_shape_tensor(self, input_shape):
    return tf.constant(self._out_shape, tf.int32)

  def _inverse_event_shape_tensor(self, output_shape):
    return tf.constant(self._event_shape_tuple, tf.int32)
