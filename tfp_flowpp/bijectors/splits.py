"""Splits into the *paired layout* used by every coupling layer.

A coupling conditions one half of the variables on the other. Here a split is
a volume-preserving rearrangement ``[H, W, C] → [H', W', 2C']`` after which
channels ``[:C']`` hold half A (conditioning) and ``[C':]`` half B; the two
halves are then swapped between couplings with `tfb.Permute`. This matches
the official Flow++ code, which carries the halves as a tuple, and lets the
coupling network see only the half it conditions on.

* `StripeSplit` — alternate *columns*: A = even columns, B = odd columns
  (a free reshape). The official Flow++ code calls this "CheckerboardSplit".
* `CheckerboardSplit` — the true checkerboard of RealNVP: A = pixels with
  ``(i + j)`` even, B = ``(i + j)`` odd (the PyTorch reproduction's mask).
* `ChannelSplit` — A = first half of the channels. That is already the
  paired layout, so the bijector is the identity; it validates that C is
  even and names the choice in the architecture.

All have zero log-det.
"""

import tensorflow as tf

from tfp_flowpp.bijectors import rearrangement

__all__ = ['StripeSplit', 'CheckerboardSplit', 'ChannelSplit', 'SPLITS']


class StripeSplit(rearrangement.Rearrangement):
  """Even/odd columns → channel halves: ``[H, W, C] → [H, W/2, 2C]``."""

  def __init__(self, event_shape, validate_args=False, name='stripe_split'):
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
  """(i+j)-parity halves → channel halves: ``[H, W, C] → [H, W/2, 2C]``."""

  def __init__(self,
               event_shape,
               validate_args=False,
               name='checkerboard_split'):
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
  """First/second channel half: the identity on ``[H, W, C]`` (C even)."""

  def __init__(self, event_shape, validate_args=False, name='channel_split'):
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
