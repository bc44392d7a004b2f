"""Conditioner networks that predict a coupling layer's parameters.

* `FlowppCouplingNetwork` — the Flow++ conditioner (§3.3): a `GatedResNet`
  trunk, then conv3×3 to ``C_out`` with init scale 0.1 so every coupling
  starts close to the identity (mixture means/log-scales/logits and the
  affine terms all start within ~0.1 of zero; all K logistic components then
  coincide with the standard logistic, whose logit-CDF is the identity).
* `GlowCouplingNetwork` — Glow's NN(): conv3×3 → ReLU → conv1×1 → ReLU →
  zero-initialised conv3×3 (an exact identity coupling at initialisation;
  the same network as TFP's `tfb.GlowDefaultNetwork`).
* `ZeroConvNetwork` — a single zero-initialised conv3×3, Glow's learned
  prior for factored-out channels (TFP's `GlowDefaultExitNetwork`).

All share the call signature ``network(x, context=None, training=False)``.
"""

import collections

import tensorflow as tf

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
  """`GatedResNet` trunk + conv3×3 head to ``out_channels``."""

  def __init__(self,
               input_shape,
               out_channels,
               config,
               context_channels=None,
               init_scale=0.1,
               dtype=tf.float32,
               rng=None,
               name=None):
    super().__init__(name=name)
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
      config: a `ModelConfig`; reads ``heads``, ``layer_norm``, ``dropout``,
        ``weight_norm``, ``final_nonlinearity`` and ``dtype``.
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
        rng=rng,
        name=name)

  def __call__(self, x, context=None, training=False):
    return self.head(self.trunk(x, context=context, training=training))


class GlowCouplingNetwork(tf.Module):
  """Glow's three-layer CNN with a zero-initialised output."""

  def __init__(self,
               input_shape,
               out_channels,
               hidden_channels=512,
               dtype=tf.float32,
               rng=None,
               name=None):
    super().__init__(name=name)
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
    ``glow_hidden`` in every flow (``network_size`` is unused) and the
    network ignores any context.
    """
    del network_size, context_channels
    return cls(
        input_shape,
        out_channels,
        hidden_channels=config.glow_hidden,
        dtype=tf.as_dtype(config.dtype),
        rng=rng,
        name=name)

  def __call__(self, x, context=None, training=False):
    del context, training
    return self.head(tf.nn.relu(self.conv2(tf.nn.relu(self.conv1(x)))))


class ZeroConvNetwork(tf.Module):
  """One zero-initialised conv3×3 (Glow's split prior)."""

  def __init__(self,
               input_shape,
               out_channels,
               dtype=tf.float32,
               rng=None,
               name=None):
    super().__init__(name=name)
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
    return self.conv(x)


# ``ModelConfig.network`` name -> coupling network class; each has
# ``from_config(input_shape, out_channels, config, network_size,
# context_channels, rng, name)``.
COUPLING_NETWORKS = {
    'gated_resnet': FlowppCouplingNetwork,
    'glow': GlowCouplingNetwork,
}
