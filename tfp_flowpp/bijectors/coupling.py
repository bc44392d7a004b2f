"""Base class for channel-half coupling bijectors (NICE / RealNVP / Flow++).

One half of the event conditions an elementwise transform of the other; the
math, layout, conditioning and subclassing rules are in `CouplingBijector`.
"""

import tensorflow as tf

from tfp_flowpp.bijectors import fused_log_det
from tfp_flowpp.bijectors import shapes

__all__ = ['CouplingBijector']

sum_event = fused_log_det.sum_event


class CouplingBijector(fused_log_det.FusedLogDetBijector):
  """Abstract coupling on the channel halves of an image-shaped event.

  A coupling layer [(Dinh et al., 2015)][1], [(Dinh et al., 2017)][2] leaves
  one half of its input untouched and transforms the other half elementwise
  with parameters θ that a network predicts from the first half (and an
  optional context):

  ```none
  forward:  y_a = x_a,   y_b = g(x_b; θ),      θ = network(x_a, context)
  inverse:  x_a = y_a,   x_b = g⁻¹(y_b; θ),    θ = network(y_a, context)
  log|det ∂y/∂x| = Σ_{h,w,c} log|∂g(x_b; θ)/∂x_b|
  ```

  The Jacobian is block triangular with an identity block, so its log-det is
  that of the elementwise ``g``; the network can be anything.

  Layout: events are ``(H, W, C)`` in the *paired layout* produced by the
  split bijectors (`StripeSplit`, `CheckerboardSplit`, `ChannelSplit`): the
  conditioning half ``x_a`` is channels ``[:C/2]`` and the transformed half
  ``x_b`` channels ``[C/2:]``. A checkerboard, column-stripe or channel split
  therefore all feed the same coupling code, and the network only ever sees
  the half it conditions on (no masked, wasted computation). Swap the halves
  between couplings with a `tfb.Permute` of the channel axis.

  Efficiency: the transform and its log-det come from one network evaluation
  (`FusedLogDetBijector`), so the network runs exactly once per direction per
  input tensor -- also under `tfd.TransformedDistribution.log_prob`, which
  asks for ``inverse`` and ``inverse_log_det_jacobian`` separately.

  Conditioning: every method accepts the keyword arguments ``context`` (a
  ``[..., H, W, F_c]`` tensor, e.g. the variational dequantizer's features of
  the discrete image) and ``training`` (enables dropout), and passes them to
  the network. `tfb.Chain` routes keyword arguments by bijector name
  (`conditional_kwargs` builds the nested dictionary), so conditional
  couplings in one chain need unique names.

  Subclasses set ``params_per_channel`` (P) and implement
  ``_coupling_forward(x_b, params) -> (y_b, fldj)`` and
  ``_coupling_inverse(y_b, params) -> (x_b, ildj)``, where ``params`` is the
  network output reshaped to ``[..., H, W, C/2, P]`` and the log-dets are
  already summed over the event (shape = batch shape).

  #### Examples

  A coupling ``y_b = x_b · exp(h(x_a))`` (P = 1); its log-det matches the
  brute-force Jacobian and the inverse undoes it:

  >>> import numpy as np
  >>> import tensorflow as tf
  >>> from tfp_flowpp import bijectors as fb
  >>> from tfp_flowpp import networks as fn
  >>> class ScaleCoupling(fb.CouplingBijector):
  ...   params_per_channel = 1
  ...   def _coupling_forward(self, x_b, params):
  ...     h = params[..., 0]
  ...     return x_b * tf.exp(h), tf.reduce_sum(h, axis=[-3, -2, -1])
  ...   def _coupling_inverse(self, y_b, params):
  ...     h = params[..., 0]
  ...     return y_b * tf.exp(-h), -tf.reduce_sum(h, axis=[-3, -2, -1])
  >>> config = fn.GatedResNetConfig(filters=4, blocks=1, mixer='none')
  >>> network = fn.FlowppCouplingNetwork(
  ...     (2, 2, 1), 1, config, init_scale=1., rng=np.random.default_rng(0))
  >>> coupling = ScaleCoupling(network, event_shape=(2, 2, 2))
  >>> x = tf.random.stateless_normal([1, 2, 2, 2], seed=[1, 2])
  >>> with tf.GradientTape() as tape:
  ...   tape.watch(x)
  ...   y = coupling.forward(x)
  >>> jacobian = tf.reshape(tape.jacobian(y, x), [8, 8])
  >>> np.allclose(coupling.forward_log_det_jacobian(x, event_ndims=3),
  ...             np.linalg.slogdet(jacobian)[1], atol=1e-5)
  True
  >>> np.array_equal(y[..., :1], x[..., :1])  # x_a passes through.
  True
  >>> # A new tensor, so TFP's cache does not simply hand back x:
  >>> np.allclose(coupling.inverse(tf.identity(y)), x, atol=1e-6)
  True

  #### References

  [1]: Laurent Dinh, David Krueger and Yoshua Bengio. NICE: Non-linear
       Independent Components Estimation. In _International Conference on
       Learning Representations (workshop)_, 2015.
       https://arxiv.org/abs/1410.8516

  [2]: Laurent Dinh, Jascha Sohl-Dickstein and Samy Bengio. Density
       Estimation using Real NVP. In _International Conference on Learning
       Representations_, 2017. https://arxiv.org/abs/1605.08803

  [3]: Jonathan Ho, Xi Chen, Aravind Srinivas, Yan Duan and Pieter Abbeel.
       Flow++: Improving Flow-Based Generative Models with Variational
       Dequantization and Architecture Design. In _International Conference
       on Machine Learning_, 2019. https://arxiv.org/abs/1902.00275
  """

  params_per_channel = None  # Set by subclasses.
  conditional_kwarg_names = ('context', 'training')

  def __init__(self,
               network,
               event_shape,
               validate_args=False,
               parameters=None,
               name='coupling'):
    """Creates the coupling.

    Args:
      network: callable ``network(x_a, context=None, training=False)``
        mapping ``[N, H, W, C/2]`` to ``[N, H, W, (C/2)·P]`` with
        ``P = params_per_channel``; a `tf.Module` so its variables are
        tracked.
      event_shape: ``(H, W, C)`` of the paired-layout input; ``C`` even.
      validate_args: Python `bool`, check input shapes at run time too.
      parameters: subclass ``dict(locals())``.
      name: bijector name; also the routing key for conditional kwargs.
    """
    parameters = dict(locals()) if parameters is None else parameters
    event_shape = tuple(int(d) for d in event_shape)
    if len(event_shape) != 3 or event_shape[-1] % 2:
      raise ValueError(
          f'{type(self).__name__} needs an (H, W, C) event with even C '
          f'(the paired layout of a split); got {event_shape}.')
    with tf.name_scope(name) as name:
      self._network = network
      self._event_shape = event_shape
      self._half = event_shape[-1] // 2
      super().__init__(
          validate_args=validate_args, parameters=parameters, name=name)

  @classmethod
  def params_per_channel_from_config(cls, config):
    """Network outputs per transformed channel for a `ModelConfig`.

    The builder gives the coupling network ``(C/2)·P`` output channels with
    ``P`` this number. Defaults to the class attribute ``params_per_channel``;
    a coupling whose layout depends on the config (e.g. on ``components``)
    overrides this.

    Args:
      config: a `ModelConfig` (only the fields this coupling uses are read).

    Returns:
      Python `int` ``P``.
    """
    del config
    if cls.params_per_channel is None:
      raise NotImplementedError(
          f'{cls.__name__} must set params_per_channel or override '
          'params_per_channel_from_config.')
    return int(cls.params_per_channel)

  @classmethod
  def from_config(cls, network, event_shape, config, name):
    """Builds the coupling a `ModelConfig` describes, around ``network``.

    The default passes no config field; couplings with hyperparameters
    (``components``, ``affine_scale``, ...) override this to read them.

    Args:
      network: the coupling network, built with
        `params_per_channel_from_config` outputs per transformed channel.
      event_shape: paired-layout ``(H, W, C)``.
      config: a `ModelConfig`.
      name: bijector name (routing key for ``context``/``training``).

    Returns:
      An instance of ``cls``.
    """
    del config
    return cls(network, event_shape, name=name)

  @property
  def network(self):
    return self._network

  @property
  def event_shape(self):
    return self._event_shape

  def _check_shape(self, x):
    shapes.check_event_shape(x, self._event_shape, self.name)
    if self.validate_args:
      tf.debugging.assert_equal(
          tf.shape(x)[-3:], tf.constant(self._event_shape),
          message=f'{self.name}: wrong event shape')

  def _params(self, x_a, context, training):
    batch_shape = tf.shape(x_a)[:-3]
    flat = tf.reshape(x_a, tf.concat([[-1], tf.shape(x_a)[-3:]], 0))
    if context is not None:
      context = tf.reshape(context,
                           tf.concat([[-1], tf.shape(context)[-3:]], 0))
    # Networks may compute in low precision (`tfp_flowpp.precision`); the
    # coupling transform and its log-det always run in the input's dtype.
    out = tf.cast(
        self._network(flat, context=context, training=training), x_a.dtype)
    h, w, _ = self._event_shape
    return tf.reshape(
        out,
        tf.concat([batch_shape, [h, w, self._half, self.params_per_channel]],
                  0))

  def _transform_and_log_det(self, x, context=None, training=False):
    self._check_shape(x)
    x_a, x_b = tf.split(x, [self._half, self._half], axis=-1)
    y_b, fldj = self._coupling_forward(x_b,
                                       self._params(x_a, context, training))
    return tf.concat([x_a, y_b], axis=-1), fldj

  def _inverse_transform_and_log_det(self, y, context=None, training=False):
    self._check_shape(y)
    y_a, y_b = tf.split(y, [self._half, self._half], axis=-1)
    x_b, ildj = self._coupling_inverse(y_b,
                                       self._params(y_a, context, training))
    return tf.concat([y_a, x_b], axis=-1), ildj

  def _coupling_forward(self, x_b, params):
    raise NotImplementedError

  def _coupling_inverse(self, y_b, params):
    raise NotImplementedError
