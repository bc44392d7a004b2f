"""Static event-shape checks shared by the image bijectors."""

__all__ = ['check_event_shape']


def check_event_shape(x, event_shape, name):
  """Raises a one-line ValueError if ``x`` is not ``[..., *event_shape]``.

  Unknown (None) dimensions pass; the check is at trace time, so it costs
  nothing at run time.
  """
  rank = len(event_shape)
  if x.shape.rank is None:
    return
  if x.shape.rank < rank or any(
      s is not None and s != e for s, e in zip(x.shape[-rank:], event_shape)):
    raise ValueError(f'{name}: expected inputs of shape [..., '
                     f'{", ".join(map(str, event_shape))}], got {x.shape}.')
