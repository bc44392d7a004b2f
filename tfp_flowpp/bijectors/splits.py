"""Splits into the *paired layout* used by every coupling layer.

Volume-preserving rearrangements ``[H, W, C] → [H', W', 2C']`` after which
channels ``[:C']`` hold the conditioning half and ``[C':]`` the transformed
half: `StripeSplit` (columns), `CheckerboardSplit` ((i + j) parity) and
`ChannelSplit` (channels).
"""

import tensorflow as tf

from tfp_flowpp.bijectors import rearrangement

__all__ = ['StripeSplit', 'CheckerboardSplit', 'ChannelSplit', 'SPLITS']


class StripeSplit(rearrangement.Rearrangement):
  """Even/odd columns → channel halves: ``[H, W, C] → [H, W/2, 2C]``.

  A split puts the two halves of a coupling [(Dinh et al., 2017)][1] into
  the *paired layout*: channels ``[:C]`` hold half A (conditioning) and
  ``[C:]`` half B (transformed); the halves are swapped between couplings
  with `tfb.Permute`. This matches the official Flow++ code
  [(Ho et al., 2019)][2], which carries the halves as a tuple, and lets the
  coupling network see only the half it conditions on. Here A is the even
  and B the odd columns:

  ```none
  forward:  y[i, j, c] = x[i, 2j, c],   y[i, j, C + c] = x[i, 2j + 1, c]
  inverse:  the reverse interleaving
  log|det ∂y/∂x| = 0
  ```

  which is a free reshape. The official Flow++ code calls this split
  "CheckerboardSplit"; the true checkerboard is `CheckerboardSplit`.

  #### Examples

  >>> import numpy as np
  >>> import tensorflow as tf
  >>> from tfp_flowpp import bijectors as fb
  >>> x = tf.reshape(tf.range(8.), [1, 2, 4, 1])  # x[0, i, j, 0] = 4i + j
  >>> split = fb.StripeSplit(event_shape=(2, 4, 1))
  >>> split.output_shape
  (2, 2, 2)
  >>> y = split.forward(x)
  >>> y[0, :, :, 0].numpy().astype(int).tolist()  # A: even columns.
  [[0, 2], [4, 6]]
  >>> y[0, :, :, 1].numpy().astype(int).tolist()  # B: odd columns.
  [[1, 3], [5, 7]]
  >>> np.array_equal(split.inverse(tf.identity(y)), x)
  True

  #### References

  [1]: Laurent Dinh, Jascha Sohl-Dickstein and Samy Bengio. Density
       Estimation using Real NVP. In _International Conference on Learning
       Representations_, 2017. https://arxiv.org/abs/1605.08803

  [2]: Jonathan Ho, Xi Chen, Aravind Srinivas, Yan Duan and Pieter Abbeel.
       Flow++: Improving Flow-Based Generative Models with Variational
       Dequantization and Architecture Design. In _International Conference
       on Machine Learning_, 2019. https://arxiv.org/abs/1902.00275
  """

  def __init__(self, event_shape, validate_args=False, name='stripe_split'):
    """Creates the split.

    Args:
      event_shape: ``(H, W, C)`` with even ``W``.
      validate_args: Python `bool`, passed to `tfb.Bijector`.
      name: bijector name.

    Raises:
      ValueError: for an odd width.
    """
    parameters = dict(locals())
    h, w, c = (int(d) for d in event_shape)
    if w % 2:
      raise ValueError(f'StripeSplit needs an even width; got {event_shape}.')
    super().__init__(event_shape, (h, w // 2, 2 * c), validate_args, parameters,
                     name)

  def _forward(self, x):
    return self._reshape(x, self._out_shape)

  def _inverse(self, y):
    return self._reshape(y, self._event_shape_tuple)


class CheckerboardSplit(rearrangement.Rearrangement):
  """(i+j)-parity halves → channel halves: ``[H, W, C] → [H, W/2, 2C]``.

  The checkerboard mask of RealNVP [(Dinh et al., 2017)][1] (and of the
  PyTorch Flow++ reproduction) in the paired layout of `StripeSplit`: half
  A is the pixels with ``i + j`` even, half B those with ``i + j`` odd.
  Row by row, A takes the even columns of even rows and the odd columns of
  odd rows:

  ```none
  forward:  y[i, j, c] = x[i, 2j + (i mod 2), c]
            y[i, j, C + c] = x[i, 2j + 1 − (i mod 2), c]
  inverse:  the reverse interleaving
  log|det ∂y/∂x| = 0
  ```

  Implemented as a swap of the column pairs on odd rows (its own inverse)
  followed by the `StripeSplit` reshape; needs even ``H`` and ``W``.

  #### Examples

  >>> import numpy as np
  >>> import tensorflow as tf
  >>> from tfp_flowpp import bijectors as fb
  >>> x = tf.reshape(tf.range(8.), [1, 2, 4, 1])  # x[0, i, j, 0] = 4i + j
  >>> split = fb.CheckerboardSplit(event_shape=(2, 4, 1))
  >>> y = split.forward(x)
  >>> y[0, :, :, 0].numpy().astype(int).tolist()  # A: (i + j) even.
  [[0, 2], [5, 7]]
  >>> y[0, :, :, 1].numpy().astype(int).tolist()  # B: (i + j) odd.
  [[1, 3], [4, 6]]
  >>> np.array_equal(split.inverse(tf.identity(y)), x)
  True

  #### References

  [1]: Laurent Dinh, Jascha Sohl-Dickstein and Samy Bengio. Density
       Estimation using Real NVP. In _International Conference on Learning
       Representations_, 2017. https://arxiv.org/abs/1605.08803

  [2]: Jonathan Ho, Xi Chen, Aravind Srinivas, Yan Duan and Pieter Abbeel.
       Flow++: Improving Flow-Based Generative Models with Variational
       Dequantization and Architecture Design. In _International Conference
       on Machine Learning_, 2019. https://arxiv.org/abs/1902.00275
  """

  def __init__(self,
               event_shape,
               validate_args=False,
               name='checkerboard_split'):
    """Creates the split.

    Args:
      event_shape: ``(H, W, C)`` with even ``H`` and ``W``.
      validate_args: Python `bool`, passed to `tfb.Bijector`.
      name: bijector name.

    Raises:
      ValueError: for an odd height or width.
    """
    parameters = dict(locals())
    h, w, c = (int(d) for d in event_shape)
    if h % 2 or w % 2:
      raise ValueError('CheckerboardSplit needs even height and width; got '
                       f'{event_shape}.')
    super().__init__(event_shape, (h, w // 2, 2 * c), validate_args, parameters,
                     name)

  def _swap_odd_rows(self, x):
    # View as [.., H/2, row parity p, W/2, column parity q, C]; on odd rows
    # (p = 1) the (i+j)-even pixel is the odd column, so swap q there. The
    # operation is its own inverse.
    # Input and output are [..., H, W, C].
    h, w, c = self._event_shape_tuple
    batch = tf.shape(x)[:-3]
    x6 = tf.reshape(x, tf.concat([batch, [h // 2, 2, w // 2, 2, c]], 0))
    even_rows, odd_rows = x6[..., :, 0:1, :, :, :], x6[..., :, 1:2, :, :, :]
    odd_rows = tf.reverse(odd_rows, axis=[-2])
    swapped = tf.concat([even_rows, odd_rows], axis=-4)
    return tf.reshape(swapped, tf.concat([batch, [h, w, c]], 0))

  def _forward(self, x):
    return self._reshape(self._swap_odd_rows(x), self._out_shape)

  def _inverse(self, y):
    image = self._reshape(y, self._event_shape_tuple)
    return self._swap_odd_rows(image)


class ChannelSplit(rearrangement.Rearrangement):
  """First/second channel half: the identity on ``[H, W, C]`` (C even).

  The channel-wise mask of RealNVP [(Dinh et al., 2017)][1]: half A is the
  first ``C/2`` channels, half B the last. That is already the paired layout
  of `StripeSplit`, so

  ```none
  forward:  y = x,   inverse:  x = y,   log|det ∂y/∂x| = 0
  ```

  The bijector validates that ``C`` is even and names the choice in the
  architecture (the official Flow++ code's "ChannelSplit"
  [(Ho et al., 2019)][2]).

  #### Examples

  >>> import numpy as np
  >>> import tensorflow as tf
  >>> from tfp_flowpp import bijectors as fb
  >>> x = tf.random.stateless_normal([3, 2, 2, 4], seed=[1, 2])
  >>> np.array_equal(fb.ChannelSplit((2, 2, 4)).forward(x), x)
  True
  >>> fb.ChannelSplit((2, 2, 3))
  Traceback (most recent call last):
    ...
  ValueError: ChannelSplit needs an even number of channels; got (2, 2, 3).

  #### References

  [1]: Laurent Dinh, Jascha Sohl-Dickstein and Samy Bengio. Density
       Estimation using Real NVP. In _International Conference on Learning
       Representations_, 2017. https://arxiv.org/abs/1605.08803

  [2]: Jonathan Ho, Xi Chen, Aravind Srinivas, Yan Duan and Pieter Abbeel.
       Flow++: Improving Flow-Based Generative Models with Variational
       Dequantization and Architecture Design. In _International Conference
       on Machine Learning_, 2019. https://arxiv.org/abs/1902.00275
  """

  def __init__(self, event_shape, validate_args=False, name='channel_split'):
    """Creates the split.

    Args:
      event_shape: ``(H, W, C)`` with even ``C``.
      validate_args: Python `bool`, passed to `tfb.Bijector`.
      name: bijector name.

    Raises:
      ValueError: for an odd number of channels.
    """
    parameters = dict(locals())
    if int(event_shape[-1]) % 2:
      raise ValueError('ChannelSplit needs an even number of channels; got '
                       f'{event_shape}.')
    super().__init__(event_shape, event_shape, validate_args, parameters, name)

  def _forward(self, x):
    return tf.identity(x)

  def _inverse(self, y):
    return tf.identity(y)


SPLITS = {
    'stripe': StripeSplit,
    'checkerboard': CheckerboardSplit,
    'channel': ChannelSplit,
}
