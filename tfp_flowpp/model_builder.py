"""Builds a `DiscreteImageFlow` from a `ModelConfig`.

One builder serves Flow++, its ablations, RealNVP, Glow and NICE; the
architecture is entirely in the config (see `flow_spec.py` for the flow-spec
grammar), and every named option is looked up in its registry
(`bijectors.COUPLINGS`, `networks.COUPLING_NETWORKS`,
`distributions.DEQUANTIZERS`, `bijectors.SPLITS`). Bijectors are listed in
the data → latent order and wrapped in a `tfb.Chain` (which applies its
*last* element first, hence the reversal).
"""

import math

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_flowpp import bijectors as fb
from tfp_flowpp import config as config_lib
from tfp_flowpp import flow_spec
from tfp_flowpp import networks
from tfp_flowpp import precision
from tfp_flowpp.distributions import class_conditioning
from tfp_flowpp.distributions import dequantization
from tfp_flowpp.distributions import discrete_image_flow
from tfp_flowpp.networks import coupling_networks

tfb = tfp.bijectors

__all__ = ['build_model', 'count_parameters']


def count_parameters(module):
  """Number of trainable scalars of a `tf.Module` (model, bijector, ...)."""
  return int(sum(math.prod(v.shape) for v in module.trainable_variables))


class _Builder:
  """Stateful helper: unique names, one NumPy RNG, one dtype and precision.

  Registered classes build themselves with ``from_config``; a dequantizer's
  receives this builder and may use ``rng`` and `segment`.
  """

  def __init__(self, config):
    self.config = config
    self.dtype = tf.as_dtype(config.dtype)
    self.network_dtype = precision.network_dtype(config.precision)
    self.rng = np.random.default_rng(config.seed)
    self.counter = 0

  def _name(self, prefix, kind):
    self.counter += 1
    return f'{prefix}{kind}_{self.counter}'

  # Flow steps --------------------------------------------------------------

  def coupling(self, paired_shape, network_size, context_channels, prefix):
    """The ``config.coupling`` layer and its ``config.network`` network."""
    c = self.config
    h, w, channels = paired_shape
    name = self._name(prefix, 'coupling')
    coupling_class = fb.COUPLINGS[c.coupling]
    network = networks.COUPLING_NETWORKS[c.network].from_config(
        (h, w, channels // 2),
        channels // 2 * coupling_class.params_per_channel_from_config(c),
        c,
        network_size,
        context_channels=context_channels,
        rng=self.rng,
        name=name + '_network')
    return coupling_class.from_config(network, paired_shape, c, name=name)

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
              compute_dtype=self.network_dtype,
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
        flow_spec.parse_flow(c.flow), c.image_shape,
        coupling_networks.NetworkSize(c.filters, c.blocks, c.mixer),
        class_conditioning.label_context_channels(c, 'flow') or None,
        'flow_')
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
    return dequantization.DEQUANTIZERS[c.dequantizer].from_config(c, self)

  def class_conditioning(self):
    """The label parts of a class-conditional model (None otherwise)."""
    c = self.config
    if c.conditioning != 'class':
      return None
    if c.num_classes < 1:
      raise ValueError('conditioning=class needs num_classes >= 1 (bin/train '
                       'sets it from the labels of the data).')
    needs_embedding = (
        class_conditioning.label_context_channels(c, 'flow') or
        (c.dequantizer == 'variational' and
         class_conditioning.label_context_channels(c, 'dequantizer')))
    return class_conditioning.ClassConditioning(
        c.num_classes,
        c.image_shape,
        embedding_channels=c.class_embedding if needs_embedding else 0,
        prior=c.class_prior,
        dtype=self.dtype,
        rng=self.rng)


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
  # Last, so unconditional models draw the same initial values as before.
  classes = builder.class_conditioning()
  return discrete_image_flow.DiscreteImageFlow(
      flow,
      dequantizer,
      config.image_shape,
      config.num_levels,
      class_conditioning=classes,
      class_context=config.class_context,
      class_dequantizer=config.class_dequantizer,
      dtype=builder.dtype,
      validate_args=validate_args)
