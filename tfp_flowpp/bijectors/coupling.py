"""Base class for channel-half coupling bijectors (NICE / RealNVP / Flow++).

A coupling layer leaves one half of its input untouched and transforms the
other half elementwise with parameters predicted from the first half:

    y_a = x_a
    y_b = g(x_b; θ(x_a, context))

so ``log|det ∂y/∂x| = Σ log|∂g/∂x_b|`` (Dinh et al. 2015, 2017). Images are
kept in the *paired layout* produced by the split bijectors in `splits.py`:
the conditioning half ``x_a`` is channels ``[:C/2]`` and the transformed half
``x_b`` channels ``[C/2:]``, so a checkerboard, column-stripe or channel split
all feed the same coupling code and the network only ever sees the half it
conditions on (no masked, wasted computation).

Efficiency: TFP calls ``_inverse`` and ``_inverse_log_det_jacobian``
separately. A naive coupling therefore evaluates its network twice per
``log_prob``. This base class computes the transform and its log-det together
and hands the log-det to TFP's bijector cache as a *greedy attribute*
(``BijectorCacheWithGreedyAttrs``, the mechanism `tfb.FFJORD` uses), so the
network runs exactly once per direction per input tensor.

Conditioning: keyword arguments ``context`` (a tensor, e.g. the variational
dequantizer's features of the discrete image) and ``training`` (enables
dropout) are accepted by every method and routed through `tfb.Chain` by
bijector name (see `conditioning.conditional_kwargs`).
"""

import tensorflow as tf

from tfp_flowpp.bijectors import fused_log_det
from tfp_flowpp.bijectors import shapes

__all__ = ['CouplingBijector']

sum_event = fused_log_det.sum_event


class CouplingBijector(fused_log_det.FusedLogDetBijector):
  """Abstract coupling on the channel halves of an image-shaped event.

  Subclasses set ``params_per_channel`` and implement
  ``_coupling_forward(x_b, params) -> (y_b, fldj)`` and
  ``_coupling_inverse(y_b, params) -> (x_b, ildj)``, where ``params`` is the
  network output reshaped to ``[..., H, W, C/2, params_per_channel]`` and the
  log-dets are already summed over the event (shape = batch shape).
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
    out = self._network(flat, context=context, training=training)
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
