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

import tensorflow as tf

from tfp_flowpp.networks import gated_resnet
from tfp_flowpp.networks import layers

__all__ = ['FlowppCouplingNetwork', 'GlowCouplingNetwork', 'ZeroConvNetwork']


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
