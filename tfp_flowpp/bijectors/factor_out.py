"""Multi-scale factor-out (RealNVP §3.6, Glow §3).

After some steps at one scale, half of the channels are "factored out": they
go straight to the latent (the Gaussian prior) and only the kept half is
transformed further by ``inner``:

    y = concat(inner(x[..., :k]), x[..., k:])
    log|det J| = log|det J_inner(x[..., :k])|

``inner`` must preserve its event shape (a flow that squeezes ends with the
inverse squeeze), so every latent has the image's shape and is easy to
interpolate. Glow's learned prior for the factored half is an affine
coupling conditioned on the kept half placed just before the `FactorOut`.
Conditioning keyword arguments are passed to ``inner`` unchanged.
"""

import tensorflow as tf

from tfp_flowpp.bijectors import fused_log_det

__all__ = ['FactorOut']


class FactorOut(fused_log_det.FusedLogDetBijector):
  """Applies ``inner`` to the first ``num_kept_channels`` channels only."""

  def __init__(self,
               inner,
               event_shape,
               num_kept_channels=None,
               validate_args=False,
               name='factor_out'):
    parameters = dict(locals())
    self._event_shape_tuple = tuple(int(d) for d in event_shape)
    channels = self._event_shape_tuple[-1]
    self._kept = (
        channels // 2 if num_kept_channels is None else int(num_kept_channels))
    if not 0 < self._kept < channels:
      raise ValueError(f'Cannot keep {self._kept} of {channels} channels.')
    with tf.name_scope(name) as name:
      self._inner = inner
      super().__init__(
          validate_args=validate_args, parameters=parameters, name=name)

  @property
  def bijector(self):
    """The bijector applied to the kept channels."""
    return self._inner

  def _transform_and_log_det(self, x, **kwargs):
    kept, out = x[..., :self._kept], x[..., self._kept:]
    y = self._inner.forward(kept, **kwargs)
    fldj = self._inner.forward_log_det_jacobian(kept, event_ndims=3, **kwargs)
    return tf.concat([y, out], axis=-1), fldj

  def _inverse_transform_and_log_det(self, y, **kwargs):
    kept, out = y[..., :self._kept], y[..., self._kept:]
    x = self._inner.inverse(kept, **kwargs)
    ildj = self._inner.inverse_log_det_jacobian(kept, event_ndims=3, **kwargs)
    return tf.concat([x, out], axis=-1), ildj
