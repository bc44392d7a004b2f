"""Builds a `DiscreteImageFlow` from a `ModelConfig`.

One builder serves Flow++, its ablations, RealNVP, Glow and NICE; the
architecture is entirely in the config (see `config.py` for the flow-spec
grammar). Bijectors are listed in the data → latent order and wrapped in a
`tfb.Chain` (which applies its *last* element first, hence the reversal).
"""

import math

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_flowpp import bijectors as fb
from tfp_flowpp import config as config_lib
from tfp_flowpp import networks
from tfp_flowpp.distributions import dequantization
from tfp_flowpp.distributions import discrete_image_flow

tfb = tfp.bijectors

__all__ = ['build_model', 'count_parameters']


def count_parameters(module):
  """Number of trainable scalars of a `tf.Module` (model, bijector, ...)."""
  return int(sum(math.prod(v.shape) for v in module.trainable_variables))


class _Builder:
  """Stateful helper: unique names, one NumPy RNG, one dtype."""

  def __init__(self, config):
    self.config = config
    self.dtype = tf.as_dtype(config.dtype)
    self.rng = np.random.default_rng(config.seed)
    self.counter = 0

  def _name(self, prefix, kind):
    self.counter += 1
    return f'{prefix}{kind}_{self.counter}'

  # Networks ----------------------------------------------------------------

  def _gated_config(self,
                    filters,
                    blocks,
                    mixer,
                    second_kernel_size=1,
                    layer_norm=None,
                    dropout=None,
                    final_nonlinearity=None):
    c = self.config
    return networks.GatedResNetConfig(
        filters=filters,
        blocks=blocks,
        mixer=mixer,
        heads=c.heads,
        layer_norm=c.layer_norm if layer_norm is None else layer_norm,
        dropout=c.dropout if dropout is None else dropout,
        weight_norm=c.weight_norm,
        second_kernel_size=second_kernel_size,
        final_nonlinearity=(c.final_nonlinearity if final_nonlinearity is None
                            else final_nonlinearity))

  def coupling_network(self, half_shape, out_channels, network_size,
                       context_channels, name):
    c = self.config
    if c.network == 'glow':
      return networks.GlowCouplingNetwork(
          half_shape,
          out_channels,
          hidden_channels=c.glow_hidden,
          dtype=self.dtype,
          rng=self.rng,
          name=name)
    filters, blocks, mixer = network_size
    return networks.FlowppCouplingNetwork(
        half_shape,
        out_channels,
        self._gated_config(filters, blocks, mixer),
        context_channels=context_channels,
        dtype=self.dtype,
        rng=self.rng,
        name=name)

  def context_network(self, paired_shape):
    c = self.config
    cfg = self._gated_config(
        c.context_channels,
        c.context_blocks,
        c.context_mixer,
        second_kernel_size=3,
        layer_norm=c.context_layer_norm,
        final_nonlinearity=False)
    return networks.GatedResNet(
        paired_shape,
        cfg,
        dtype=self.dtype,
        rng=self.rng,
        name='dequantizer_context')

  # Flow steps --------------------------------------------------------------

  def coupling(self, paired_shape, network_size, context_channels, prefix):
    c = self.config
    h, w, channels = paired_shape
    half_shape = (h, w, channels // 2)
    name = self._name(prefix, 'coupling')
    if c.coupling == 'mix_logistic':
      per_channel = 2 + 3 * c.components
    elif c.coupling == 'affine':
      per_channel = 2
    else:
      per_channel = 1
    net = self.coupling_network(half_shape, channels // 2 * per_channel,
                                network_size, context_channels,
                                name + '_network')
    if c.coupling == 'mix_logistic':
      return fb.MixLogisticCoupling(net, paired_shape, c.components, name=name)
    if c.coupling == 'affine':
      return fb.AffineCoupling(
          net, paired_shape, scale_fn=c.affine_scale, name=name)
    return fb.AdditiveCoupling(net, paired_shape, name=name)

  def step(self, paired_shape, network_size, context_channels, prefix):
    """[norm → 1×1 conv → coupling → swap], data → latent order."""
    c = self.config
    out = []
    if c.norm != 'none':
      out.append(
          fb.ActNorm(
              paired_shape,
              per_element=c.norm == 'per_element',
              dtype=self.dtype,
              name=self._name(prefix, 'norm')))
    if c.conv1x1 != 'none':
      out.append(
          fb.InvertibleConv1x1(
              paired_shape,
              num_groups=2 if c.conv1x1 == 'per_half' else 1,
              init=c.conv1x1_init,
              seed=int(self.rng.integers(2**31)),
              dtype=self.dtype,
              name=self._name(prefix, 'conv1x1')))
    out.append(
        self.coupling(paired_shape, network_size, context_channels, prefix))
    if c.swap_halves:
      half = paired_shape[-1] // 2
      perm = list(range(half, 2 * half)) + list(range(half))
      out.append(tfb.Permute(perm, axis=-1, name=self._name(prefix, 'swap')))
    return out

  def segment(self, tokens, shape, network_size, context_channels, prefix):
    """Bijectors (data → latent order) for ``tokens`` on ``shape``."""
    c = self.config
    out = []
    for i, token in enumerate(tokens):
      rest = tokens[i + 1:]
      if token.kind == 'squeeze':
        squeeze = fb.Squeeze(shape, name=self._name(prefix, 'squeeze'))
        inner = self.segment(rest, squeeze.output_shape, network_size,
                             context_channels, prefix)
        return out + [squeeze] + inner + [tfb.Invert(squeeze)]
      if token.kind == 'factor_out':
        h, w, channels = shape
        if channels < 2:
          raise ValueError(f'Cannot factor out half of {channels} channel(s) '
                           f'at shape {shape}; squeeze first.')
        kept = (h, w, channels // 2)
        if c.split_prior:
          prior_net = networks.ZeroConvNetwork(
              kept, (channels - channels // 2) * 2,
              dtype=self.dtype,
              rng=self.rng,
              name=self._name(prefix, 'split_prior_network'))
          out.append(
              fb.AffineCoupling(
                  prior_net,
                  shape,
                  scale_fn='exp_tanh',
                  name=self._name(prefix, 'split_prior')))
        inner = self.segment(rest, kept, network_size, context_channels, prefix)
        out.append(
            fb.FactorOut(
                tfb.Chain(inner[::-1], name=self._name(prefix, 'kept')),
                shape,
                num_kept_channels=channels // 2,
                name=self._name(prefix, 'factor_out')))
        return out
      split = fb.SPLITS[token.split](
          shape, name=self._name(prefix, token.split))
      out.append(split)
      for _ in range(token.steps):
        out += self.step(split.output_shape, network_size, context_channels,
                         prefix)
      out.append(tfb.Invert(split))
    return out

  # Model -------------------------------------------------------------------

  def flow_bijector(self):
    c = self.config
    steps = self.segment(
        config_lib.parse_flow(c.flow), c.image_shape,
        (c.filters, c.blocks, c.mixer), None, 'flow_')
    if c.final_scale:
      steps.append(
          fb.ActNorm(
              c.image_shape,
              per_element=True,
              data_init=False,
              dtype=self.dtype,
              name='flow_final_scale'))
    preprocess = fb.LogitPreprocess(
        c.num_levels, c.preprocess_alpha, name='flow_preprocess')
    return tfb.Chain(([preprocess] + steps)[::-1], name='flow')

  def dequantizer(self):
    c = self.config
    if c.dequantizer == 'uniform':
      return dequantization.UniformDequantizer(c.image_shape, dtype=self.dtype)
    tokens = config_lib.parse_flow(c.dequantizer_flow)
    layout = fb.SPLITS[tokens[0].split](
        c.image_shape, name='dequantizer_context_layout')
    context_net = self.context_network(layout.output_shape)
    steps = self.segment(
        tokens, c.image_shape,
        (c.dequantizer_filters, c.dequantizer_blocks, c.dequantizer_mixer),
        c.context_channels, 'dequantizer_')
    flow = tfb.Chain(steps[::-1], name='dequantizer_flow')
    return dequantization.VariationalDequantizer(
        flow,
        context_net,
        layout,
        c.image_shape,
        c.num_levels,
        squash=c.dequantizer_squash,
        dtype=self.dtype)


def build_model(config, validate_args=False):
  """Returns the `DiscreteImageFlow` described by ``config``.

  Build it eagerly, inside ``strategy.scope()`` when training distributed:
  every variable is created here, none lazily.
  """
  if not isinstance(config, config_lib.ModelConfig):
    raise TypeError(f'build_model needs a ModelConfig, got {type(config)}.')
  builder = _Builder(config)
  with tf.name_scope('flow'):
    flow = builder.flow_bijector()
  with tf.name_scope('dequantizer'):
    dequantizer = builder.dequantizer()
  return discrete_image_flow.DiscreteImageFlow(
      flow,
      dequantizer,
      config.image_shape,
      config.num_levels,
      dtype=builder.dtype,
      validate_args=validate_args)
