"""Base of the volume-preserving layout changes (splits, squeeze)."""

import tensorflow as tf
import tensorflow_probability as tfp

tfb = tfp.bijectors

__all__ = ['Rearrangement']


class Rearrangement(tfb.Bijector):
  """A permutation of elements, ``[..., *event_shape] → [..., *output_shape]``.

  Subclasses implement ``_forward`` / ``_inverse``; the log-det is zero and
  the event-shape bookkeeping TFP needs is provided here.
  """

  def __init__(self, event_shape, output_shape, validate_args, parameters,
               name):
    self._event_shape_tuple = tuple(int(d) for d in event_shape)
    self._out_shape = tuple(int(d) for d in output_shape)
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

  def _reshape(self, x, shape):
    """Reshapes the trailing 3 event dims of ``x`` to ``shape``."""
    return tf.reshape(x, tf.concat([tf.shape(x)[:-3], shape], 0))

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
