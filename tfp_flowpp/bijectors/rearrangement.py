"""Base of the volume-preserving layout changes (splits, squeeze).

See `Rearrangement`.
"""

import tensorflow as tf
import tensorflow_probability as tfp

tfb = tfp.bijectors

__all__ = ['Rearrangement']


class Rearrangement(tfb.Bijector):
  """A permutation of elements, ``[..., *event_shape] → [..., *output_shape]``.

  A bijector that only moves elements, ``y = Π x`` for a fixed permutation
  ``Π`` of the event's entries (optionally into another ``(H', W', C')``
  shape), as the squeeze and the split layouts of RealNVP
  [(Dinh et al., 2017)][1] do:

  ```none
  forward:  y = Π x
  inverse:  x = Πᵀ y
  log|det ∂y/∂x| = 0        (is_constant_jacobian=True)
  ```

  Subclasses implement ``_forward`` / ``_inverse``; the zero log-det and the
  static and dynamic event-shape bookkeeping TFP needs are provided here.

  #### Examples

  A transpose of the spatial axes, ``[H, W, C] → [W, H, C]``:

  >>> import numpy as np
  >>> import tensorflow as tf
  >>> from tfp_flowpp.bijectors import rearrangement
  >>> class Transpose(rearrangement.Rearrangement):
  ...   def __init__(self, event_shape, name='transpose'):
  ...     h, w, c = event_shape
  ...     super().__init__(event_shape, (w, h, c), validate_args=False,
  ...                      parameters=dict(locals()), name=name)
  ...   def _forward(self, x):
  ...     return tf.experimental.numpy.swapaxes(x, -3, -2)
  ...   def _inverse(self, y):
  ...     return tf.experimental.numpy.swapaxes(y, -3, -2)
  >>> transpose = Transpose((2, 3, 1))
  >>> transpose.forward_event_shape([2, 3, 1])
  TensorShape([3, 2, 1])
  >>> x = tf.reshape(tf.range(12.), [2, 2, 3, 1])
  >>> float(transpose.forward_log_det_jacobian(x, event_ndims=3))
  0.0
  >>> y = transpose.forward(x)
  >>> np.array_equal(y[0, :, :, 0], tf.transpose(x[0, :, :, 0]))
  True
  >>> np.array_equal(transpose.inverse(tf.identity(y)), x)
  True

  #### References

  [1]: Laurent Dinh, Jascha Sohl-Dickstein and Samy Bengio. Density
       Estimation using Real NVP. In _International Conference on Learning
       Representations_, 2017. https://arxiv.org/abs/1605.08803
  """

  def __init__(self, event_shape, output_shape, validate_args, parameters,
               name):
    """Creates the bijector (``forward_min_event_ndims = 3``).

    Args:
      event_shape: input ``(H, W, C)``.
      output_shape: output ``(H', W', C')`` with the same number of elements.
      validate_args: Python `bool`, passed to `tfb.Bijector`.
      parameters: the subclass's ``dict(locals())``.
      name: bijector name.
    """
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
