"""Additive coupling (NICE, Dinh, Krueger & Bengio 2015).

A volume-preserving shift of one channel half conditioned on the other; see
`AdditiveCoupling`.
"""

import tensorflow as tf

from tfp_flowpp.bijectors import coupling

__all__ = ['AdditiveCoupling']


class AdditiveCoupling(coupling.CouplingBijector):
  """NICE additive coupling on channel halves.

  The additive coupling of [(Dinh et al., 2015)][1] on the paired layout of
  `CouplingBijector`, with ``m = network(x_a)``:

  ```none
  forward:  y_a = x_a,   y_b = x_b + m(x_a)
  inverse:  x_a = y_a,   x_b = y_b − m(y_a)
  log|det ∂y/∂x| = 0
  ```

  Volume preserving, so NICE pairs it with a final diagonal scaling layer
  (in `model_builder`, ``final_scale``: a per-element `ActNorm` with
  ``data_init=False``). The network outputs one value per transformed
  channel (``params_per_channel = 1``): ``[N, H, W, C/2]`` is ``m``.

  #### Examples

  >>> import numpy as np
  >>> import tensorflow as tf
  >>> from tfp_flowpp import bijectors as fb
  >>> from tfp_flowpp import networks as fn
  >>> config = fn.GatedResNetConfig(filters=4, blocks=1, mixer='none')
  >>> network = fn.FlowppCouplingNetwork(
  ...     (2, 2, 1), 1, config, init_scale=1., rng=np.random.default_rng(0))
  >>> coupling = fb.AdditiveCoupling(network, event_shape=(2, 2, 2))
  >>> x = tf.random.stateless_normal([3, 2, 2, 2], seed=[1, 2])
  >>> y = coupling.forward(x)
  >>> np.allclose(y[..., 1], x[..., 1] + network(x[..., :1])[..., 0])
  True
  >>> coupling.forward_log_det_jacobian(x, event_ndims=3).numpy()
  array([0., 0., 0.], dtype=float32)
  >>> np.allclose(coupling.inverse(tf.identity(y)), x, atol=1e-6)
  True

  #### References

  [1]: Laurent Dinh, David Krueger and Yoshua Bengio. NICE: Non-linear
       Independent Components Estimation. In _International Conference on
       Learning Representations (workshop)_, 2015.
       https://arxiv.org/abs/1410.8516
  """

  params_per_channel = 1

  def __init__(self,
               network,
               event_shape,
               validate_args=False,
               name='additive_coupling'):
    """Creates the coupling.

    Args:
      network: see `CouplingBijector`; outputs ``C/2`` channels (``m``).
      event_shape: paired-layout ``(H, W, C)``, ``C`` even.
      validate_args: Python `bool`, check input shapes at run time too.
      name: bijector name (routing key for ``context``/``training``).
    """
    parameters = dict(locals())
    super().__init__(
        network,
        event_shape,
        validate_args=validate_args,
        parameters=parameters,
        name=name)

  def _coupling_forward(self, x_b, params):
    zero = tf.zeros(tf.shape(x_b)[:-3], x_b.dtype)
    return x_b + params[..., 0], zero

  def _coupling_inverse(self, y_b, params):
    zero = tf.zeros(tf.shape(y_b)[:-3], y_b.dtype)
    return y_b - params[..., 0], zero
