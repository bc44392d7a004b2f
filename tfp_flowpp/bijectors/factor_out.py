"""Multi-scale factor-out (RealNVP §3.6, Glow §3).

Half of the channels go straight to the latent and only the kept half is
transformed further; see `FactorOut`.
"""

import tensorflow as tf

from tfp_flowpp.bijectors import fused_log_det

__all__ = ['FactorOut']


class FactorOut(fused_log_det.FusedLogDetBijector):
  """Applies ``inner`` to the first ``num_kept_channels`` channels only.

  The multi-scale architecture of [(Dinh et al., 2017)][1], §3.6, and
  [(Kingma & Dhariwal, 2018)][2]: after some steps at one scale, the last
  ``C − k`` channels are "factored out" -- they go straight to the latent
  (the Gaussian prior) -- and only the first ``k`` are transformed further:

  ```none
  forward:  y = concat(inner(x[..., :k]), x[..., k:])
  inverse:  x = concat(inner⁻¹(y[..., :k]), y[..., k:])
  log|det ∂y/∂x| = log|det ∂inner(x[..., :k])/∂x[..., :k]|
  ```

  ``inner`` must preserve its ``(H, W, k)`` event shape (a flow that
  squeezes ends with the inverse squeeze), so every latent has the image's
  shape and is easy to interpolate. Glow's learned prior for the factored
  half is an `AffineCoupling` conditioned on the kept half placed just before
  the `FactorOut` (``split_prior`` in `model_builder`). Conditioning keyword
  arguments are passed to ``inner`` unchanged, and the output comes with
  ``inner``'s log-det (`FusedLogDetBijector`), so the couplings inside
  ``inner`` still run their networks once per direction.

  #### Examples

  >>> import numpy as np
  >>> import tensorflow as tf
  >>> from tfp_flowpp import bijectors as fb
  >>> inner = fb.ActNorm((2, 2, 2), data_init=False)
  >>> _ = inner.log_scale.assign([0.5, -1.])
  >>> factor_out = fb.FactorOut(inner, event_shape=(2, 2, 4))
  >>> x = tf.random.stateless_normal([3, 2, 2, 4], seed=[1, 2])
  >>> y = factor_out.forward(x)
  >>> np.array_equal(y[..., 2:], x[..., 2:])  # Factored out: unchanged.
  True
  >>> np.allclose(y[..., :2], inner.forward(x[..., :2]))
  True
  >>> factor_out.forward_log_det_jacobian(x, event_ndims=3).numpy()
  array([-2., -2., -2.], dtype=float32)
  >>> np.allclose(factor_out.inverse(tf.identity(y)), x)
  True

  #### References

  [1]: Laurent Dinh, Jascha Sohl-Dickstein and Samy Bengio. Density
       Estimation using Real NVP. In _International Conference on Learning
       Representations_, 2017. https://arxiv.org/abs/1605.08803

  [2]: Diederik P. Kingma and Prafulla Dhariwal. Glow: Generative Flow with
       Invertible 1x1 Convolutions. In _Neural Information Processing
       Systems_, 2018. https://arxiv.org/abs/1807.03039
  """

  def __init__(self,
               inner,
               event_shape,
               num_kept_channels=None,
               validate_args=False,
               name='factor_out'):
    """Creates the bijector.

    Args:
      inner: bijector on ``(H, W, k)`` events that preserves the event shape.
      event_shape: ``(H, W, C)``.
      num_kept_channels: ``k``, the channels ``inner`` transforms; default
        ``C // 2``.
      validate_args: Python `bool`, passed to `tfb.Bijector`.
      name: bijector name.

    Raises:
      ValueError: unless ``0 < k < C``.
    """
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
