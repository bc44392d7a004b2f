"""Conditioner networks that predict a coupling layer's parameters.

`FlowppCouplingNetwork` (Flow++), `GlowCouplingNetwork` (Glow's NN()) and
`ZeroConvNetwork` (Glow's split prior), all with the call signature
``network(x, context=None, training=False)``. Each computes in its
``compute_dtype`` (None: the input's dtype) -- inputs are cast to it at the
boundary -- and returns its parameters in the input's dtype (see
`tfp_flowpp.precision`).
"""

import collections

import tensorflow as tf

from tfp_flowpp import precision
from tfp_flowpp.networks import gated_resnet
from tfp_flowpp.networks import layers

__all__ = [
    'COUPLING_NETWORKS', 'FlowppCouplingNetwork', 'GlowCouplingNetwork',
    'NetworkSize', 'ZeroConvNetwork'
]

NetworkSize = collections.namedtuple('NetworkSize',
                                     ['filters', 'blocks', 'mixer'])
"""Width, depth and mixer of the coupling networks of one flow.

The main flow's are ``ModelConfig.filters/blocks/mixer``, the variational
dequantizer's ``dequantizer_filters/blocks/mixer``; a network type reads what
it uses.
"""


class FlowppCouplingNetwork(tf.Module):
  """`GatedResNet` trunk + conv3×3 head to ``out_channels``.

  The Flow++ conditioner [(Ho et al., 2019)][1], §3.3, mapping the
  conditioning half ``[N, H, W, C_in]`` (and an optional context
  ``[N, H, W, context_channels]``) to coupling parameters
  ``[N, H, W, out_channels]``:

  ```none
  network(x, context) = conv3×3(GatedResNet(x, context))     (init scale 0.1)
  ```

  The head's small initial scale makes every coupling start close to the
  identity: its outputs start with standard deviation ≈ ``init_scale``, so
  mixture means, log-scales and logits and the affine terms all start near
  zero, where every logistic component is the standard logistic, whose
  logit-CDF is the identity.

  #### Examples

  >>> import numpy as np
  >>> import tensorflow as tf
  >>> from tfp_flowpp import networks as fn
  >>> config = fn.GatedResNetConfig(filters=8, blocks=1, heads=2)
  >>> network = fn.FlowppCouplingNetwork(
  ...     (4, 4, 2), out_channels=22, config=config,
  ...     rng=np.random.default_rng(0))
  >>> x = tf.random.stateless_normal([16, 4, 4, 2], seed=[1, 2])
  >>> out = network(x)
  >>> out.shape
  TensorShape([16, 4, 4, 22])
  >>> print(round(float(tf.math.reduce_std(out)), 1))
  0.1

  #### References

  [1]: Jonathan Ho, Xi Chen, Aravind Srinivas, Yan Duan and Pieter Abbeel.
       Flow++: Improving Flow-Based Generative Models with Variational
       Dequantization and Architecture Design. In _International Conference
       on Machine Learning_, 2019. https://arxiv.org/abs/1902.00275
  """

  def __init__(self,
               input_shape,
               out_channels,
               config,
               context_channels=None,
               init_scale=0.1,
               dtype=tf.float32,
               compute_dtype=None,
               rng=None,
               name=None):
    """Creates the network's variables.

    Args:
      input_shape: ``(H, W, C_in)`` of the conditioning half.
      out_channels: coupling parameters per position, ``(C/2)·P``.
      config: `GatedResNetConfig` of the trunk.
      context_channels: channels of the conditioning context, or None.
      init_scale: output standard deviation of the head at initialisation.
      dtype: variable dtype.
      compute_dtype: dtype the network computes in (e.g. `tf.bfloat16`);
        None = the input's. The output has the input's dtype either way.
      rng: `np.random.Generator` for the initial values; None = fresh.
      name: module name.
    """
    super().__init__(name=name)
    self.compute_dtype = compute_dtype
    with self.name_scope:
      self.trunk = gated_resnet.GatedResNet(
          input_shape,
          config,
          context_channels=context_channels,
          dtype=dtype,
          rng=rng,
          name='trunk')
      self.head = layers.Conv2D(
          self.trunk.output_channels,
          out_channels,
          3,
          init_scale=init_scale,
          weight_norm=config.weight_norm,
          dtype=dtype,
          rng=rng,
          name='head')

  @classmethod
  def from_config(cls,
                  input_shape,
                  out_channels,
                  config,
                  network_size,
                  context_channels=None,
                  rng=None,
                  name=None):
    """The coupling network a `ModelConfig` describes.

    Args:
      input_shape: ``(H, W, C/2)`` of the conditioning half.
      out_channels: ``(C/2)·P``, ``P`` the coupling's parameters per channel.
      config: a `ModelConfig`; reads ``heads``, ``attention_kernel``,
        ``layer_norm``, ``dropout``, ``weight_norm``,
        ``final_nonlinearity``, ``dtype`` and ``precision``.
      network_size: `NetworkSize` of the flow this network belongs to.
      context_channels: channels of the conditioning context, or None.
      rng: the model's NumPy `Generator` (initial values).
      name: module name.

    Returns:
      A `FlowppCouplingNetwork`.
    """
    trunk = gated_resnet.GatedResNetConfig(
        filters=network_size.filters,
        blocks=network_size.blocks,
        mixer=network_size.mixer,
        heads=config.heads,
        attention_kernel=config.attention_kernel,
        layer_norm=config.layer_norm,
        dropout=config.dropout,
        weight_norm=config.weight_norm,
        second_kernel_size=1,
        final_nonlinearity=config.final_nonlinearity)
    return cls(
        input_shape,
        out_channels,
        trunk,
        context_channels=context_channels,
        dtype=tf.as_dtype(config.dtype),
        compute_dtype=precision.network_dtype(config.precision),
        rng=rng,
        name=name)

  def __call__(self, x, context=None, training=False):
    out_dtype = x.dtype
    x, context = layers.boundary_cast(self.compute_dtype, x, context)
    return tf.cast(
        self.head(self.trunk(x, context=context, training=training)),
        out_dtype)


class GlowCouplingNetwork(tf.Module):
  """Glow's three-layer CNN with a zero-initialised output.

  The coupling network NN() of Glow [(Kingma & Dhariwal, 2018)][1]:

  ```none
  network(x) = conv3×3_zero(relu(conv1×1(relu(conv3×3(x)))))
  ```

  with ``hidden_channels`` hidden channels (512 in Glow) and a zero-initialised
  last layer, so every coupling is exactly the identity at initialisation.
  The architecture of TFP's `tfb.GlowDefaultNetwork`, which initialises its
  hidden layers He-normal (std √(2/fan_in)) where these use std
  1/√fan_in (`Conv2D`). Built with ``context_channels`` (a class-conditional
  model's label embedding), a conv1×1 of the context is added to the first
  hidden layer, ``relu(conv3×3(x) + conv1×1(context))``; otherwise
  ``context`` is ignored, as is ``training``.

  #### Examples

  >>> import numpy as np
  >>> import tensorflow as tf
  >>> from tfp_flowpp import networks as fn
  >>> network = fn.GlowCouplingNetwork(
  ...     (4, 4, 2), out_channels=4, hidden_channels=16,
  ...     rng=np.random.default_rng(0))
  >>> out = network(tf.random.stateless_normal([3, 4, 4, 2], seed=[1, 2]))
  >>> out.shape, int(tf.math.count_nonzero(out))
  (TensorShape([3, 4, 4, 4]), 0)

  #### References

  [1]: Diederik P. Kingma and Prafulla Dhariwal. Glow: Generative Flow with
       Invertible 1x1 Convolutions. In _Neural Information Processing
       Systems_, 2018. https://arxiv.org/abs/1807.03039
  """

  def __init__(self,
               input_shape,
               out_channels,
               hidden_channels=512,
               context_channels=None,
               dtype=tf.float32,
               compute_dtype=None,
               rng=None,
               name=None):
    """Creates the network's variables.

    Args:
      input_shape: ``(H, W, C_in)`` of the conditioning half.
      out_channels: coupling parameters per position.
      hidden_channels: width of the two hidden layers.
      context_channels: channels of the conditioning context, or None.
      dtype: variable dtype.
      compute_dtype: dtype the network computes in; None = the input's.
      rng: `np.random.Generator` for the initial values; None = fresh.
      name: module name.
    """
    super().__init__(name=name)
    self.compute_dtype = compute_dtype
    in_channels = int(input_shape[-1])
    with self.name_scope:
      self.conv1 = layers.Conv2D(
          in_channels, hidden_channels, 3, dtype=dtype, rng=rng, name='conv1')
      self.conv2 = layers.Conv2D(
          hidden_channels,
          hidden_channels,
          1,
          dtype=dtype,
          rng=rng,
          name='conv2')
      self.head = layers.Conv2D(
          hidden_channels,
          out_channels,
          3,
          zero_init=True,
          dtype=dtype,
          rng=rng,
          name='head')
      self.context_proj = None
      if context_channels:
        self.context_proj = layers.Conv2D(
            context_channels,
            hidden_channels,
            1,
            dtype=dtype,
            rng=rng,
            name='context_proj')

  @classmethod
  def from_config(cls,
                  input_shape,
                  out_channels,
                  config,
                  network_size,
                  context_channels=None,
                  rng=None,
                  name=None):
    """The network with ``config.glow_hidden`` hidden channels.

    Arguments as `FlowppCouplingNetwork.from_config`. The width is
    ``glow_hidden`` in every flow (``network_size`` is unused).
    """
    del network_size
    return cls(
        input_shape,
        out_channels,
        hidden_channels=config.glow_hidden,
        context_channels=context_channels,
        dtype=tf.as_dtype(config.dtype),
        compute_dtype=precision.network_dtype(config.precision),
        rng=rng,
        name=name)

  def __call__(self, x, context=None, training=False):
    del training
    out_dtype = x.dtype
    x, context = layers.boundary_cast(self.compute_dtype, x, context)
    h = self.conv1(x)
    if self.context_proj is not None:
      if context is None:
        raise ValueError(f'{self.name} was built for a context but got none.')
      h += self.context_proj(context)
    return tf.cast(self.head(tf.nn.relu(self.conv2(tf.nn.relu(h)))), out_dtype)


class ZeroConvNetwork(tf.Module):
  """One zero-initialised conv3×3 (Glow's split prior).

  The learned prior of Glow's multi-scale split [(Kingma & Dhariwal,
  2018)][1]: the parameters of an affine map of the factored-out half -- a
  Gaussian prior conditioned on the kept half -- are a zero-initialised
  convolution of the kept half,

  ```none
  network(x) = conv3×3_zero(x)
  ```

  used as the network of an `AffineCoupling` placed before a `FactorOut`
  (``split_prior`` in `model_builder`), like TFP's
  `tfb.GlowDefaultExitNetwork`. It starts as the identity (a standard
  normal prior). ``context`` and ``training`` are accepted and ignored.

  #### Examples

  >>> import numpy as np
  >>> import tensorflow as tf
  >>> from tfp_flowpp import networks as fn
  >>> network = fn.ZeroConvNetwork((4, 4, 2), out_channels=4)
  >>> out = network(tf.random.stateless_normal([3, 4, 4, 2], seed=[1, 2]))
  >>> out.shape, int(tf.math.count_nonzero(out))
  (TensorShape([3, 4, 4, 4]), 0)
  >>> sum(int(np.prod(v.shape)) for v in network.trainable_variables)
  76

  #### References

  [1]: Diederik P. Kingma and Prafulla Dhariwal. Glow: Generative Flow with
       Invertible 1x1 Convolutions. In _Neural Information Processing
       Systems_, 2018. https://arxiv.org/abs/1807.03039
  """

  def __init__(self,
               input_shape,
               out_channels,
               dtype=tf.float32,
               compute_dtype=None,
               rng=None,
               name=None):
    """Creates the network's variables.

    Args:
      input_shape: ``(H, W, C_in)`` of the kept half.
      out_channels: parameters per position.
      dtype: variable dtype.
      compute_dtype: dtype the network computes in; None = the input's.
      rng: unused (the kernel starts at zero); kept for a uniform signature.
      name: module name.
    """
    super().__init__(name=name)
    self.compute_dtype = compute_dtype
    with self.name_scope:
      self.conv = layers.Conv2D(
          int(input_shape[-1]),
          out_channels,
          3,
          zero_init=True,
          dtype=dtype,
          rng=rng,
          name='conv')

  def __call__(self, x, context=None, training=False):
    del context, training
    out_dtype = x.dtype
    x, = layers.boundary_cast(self.compute_dtype, x)
    return tf.cast(self.conv(x), out_dtype)


# ``ModelConfig.network`` name -> coupling network class; each has
# ``from_config(input_shape, out_channels, config, network_size,
# context_channels, rng, name)``.
COUPLING_NETWORKS = {
    'gated_resnet': FlowppCouplingNetwork,
    'glow': GlowCouplingNetwork,
}
