"""Squeeze: space-to-depth (RealNVP §3.6, Glow, Flow++); see `Squeeze`."""

import tensorflow as tf

from tfp_flowpp.bijectors import rearrangement

__all__ = ['Squeeze']


def _as_4d(x):
  shape = tf.shape(x)
  return tf.reshape(x, tf.concat([[-1], shape[-3:]], 0)), shape[:-3]


class Squeeze(rearrangement.Rearrangement):
  """Space-to-depth with block size ``factor``.

  The squeeze of RealNVP [(Dinh et al., 2017)][1], §3.6, also used by Glow
  [(Kingma & Dhariwal, 2018)][2] and Flow++ [(Ho et al., 2019)][3]: trades
  spatial resolution for channels, ``[H, W, C] → [H/f, W/f, f²·C]``, with
  `tf.nn.space_to_depth` (``f = factor``, 2 by default):

  ```none
  forward:  y[i, j, (a·f + b)·C + c] = x[f·i + a, f·j + b, c]
  inverse:  tf.nn.depth_to_space
  log|det ∂y/∂x| = 0        (a permutation)
  ```

  #### Examples

  >>> import numpy as np
  >>> import tensorflow as tf
  >>> from tfp_flowpp import bijectors as fb
  >>> x = tf.reshape(tf.range(16.), [1, 4, 4, 1])  # x[0, i, j, 0] = 4i + j
  >>> squeeze = fb.Squeeze(event_shape=(4, 4, 1))
  >>> squeeze.output_shape
  (2, 2, 4)
  >>> y = squeeze.forward(x)
  >>> y[0, 0, 0].numpy().astype(int).tolist()  # The top-left 2×2 block.
  [0, 1, 4, 5]
  >>> np.array_equal(squeeze.inverse(tf.identity(y)), x)
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

  def __init__(self,
               event_shape,
               factor=2,
               validate_args=False,
               name='squeeze'):
    """Creates the squeeze.

    Args:
      event_shape: ``(H, W, C)`` with ``H`` and ``W`` divisible by ``factor``.
      factor: block size ``f``.
      validate_args: Python `bool`, passed to `tfb.Bijector`.
      name: bijector name.

    Raises:
      ValueError: if ``factor`` does not divide ``H`` and ``W``.
    """
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
