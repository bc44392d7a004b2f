"""The Flow++ conditioner trunk: a stack of gated conv / attention blocks.

    conv3×3 to F → B × [gated conv → LN → mixer → LN] (→ concat_elu)

``mixer`` is ``'attention'`` (gated multi-head self-attention with a learned
positional embedding [H, W, F], std 0.01, shared by all blocks),
``'pointwise'`` (the official parameter-matched no-attention ablation) or
``'none'`` (then each block is [gated conv → LN], the official ImageNet
dequantizer). Used both as the coupling network body and as the variational
dequantizer's context network.
"""

import dataclasses

import tensorflow as tf

from tfp_flowpp.networks import blocks
from tfp_flowpp.networks import layers

__all__ = ['GatedResNetConfig', 'GatedResNet', 'MIXERS']

# ``mixer`` name -> block class (``from_config(filters, config, dtype, rng,
# name)``, called as ``block(h, positional_embedding, training)``); ``None``:
# no mixer, no positional embedding.
MIXERS = {
    'attention': blocks.GatedAttentionBlock,
    'pointwise': blocks.PointwiseMaxoutBlock,
    'none': None,
}


@dataclasses.dataclass(frozen=True)
class GatedResNetConfig:
  """Hyperparameters of a `GatedResNet` (see module docstring)."""
  filters: int = 96
  blocks: int = 10
  mixer: str = 'attention'
  heads: int = 4
  layer_norm: bool = True
  dropout: float = 0.
  weight_norm: bool = False
  second_kernel_size: int = 1
  final_nonlinearity: bool = False

  def __post_init__(self):
    if self.mixer not in MIXERS:
      raise ValueError(f'mixer must be one of {tuple(MIXERS)}, got '
                       f'{self.mixer!r}.')
    if self.filters < 1 or self.blocks < 0:
      raise ValueError(f'Bad network size: filters={self.filters}, '
                       f'blocks={self.blocks}.')
    if self.mixer == 'attention' and self.filters % self.heads:
      raise ValueError(f'filters={self.filters} must be divisible by '
                       f'heads={self.heads}.')
    if not 0. <= self.dropout < 1.:
      raise ValueError(f'dropout must be in [0, 1), got {self.dropout}.')


class GatedResNet(tf.Module):
  """``[N, H, W, C_in] → [N, H, W, F]`` (or 2F after the final concat_elu)."""

  def __init__(self,
               input_shape,
               config,
               context_channels=None,
               dtype=tf.float32,
               rng=None,
               name=None):
    super().__init__(name=name)
    height, width, in_channels = (int(d) for d in input_shape)
    self.config = config
    self.input_shape = (height, width, in_channels)
    f = config.filters
    rng = layers.default_rng(rng)
    mixer = MIXERS[config.mixer]
    with self.name_scope:
      self.proj_in = layers.Conv2D(
          in_channels,
          f,
          3,
          weight_norm=config.weight_norm,
          dtype=dtype,
          rng=rng,
          name='proj_in')
      self.positional_embedding = None
      if mixer is not None:
        self.positional_embedding = tf.Variable(
            tf.constant(rng.normal(0., 0.01, size=(height, width, f)), dtype),
            name='positional_embedding')
      self.conv_blocks, self.mixers, self.norms = [], [], []
      for i in range(config.blocks):
        self.conv_blocks.append(
            blocks.GatedConvBlock(
                f,
                context_channels=context_channels,
                second_kernel_size=config.second_kernel_size,
                dropout=config.dropout,
                weight_norm=config.weight_norm,
                dtype=dtype,
                rng=rng,
                name=f'conv_block_{i}'))
        norms = []
        if config.layer_norm:
          norms.append(layers.LayerNorm(f, dtype=dtype, name=f'norm_{i}a'))
        if mixer is not None:
          self.mixers.append(
              mixer.from_config(
                  f, config, dtype=dtype, rng=rng, name=f'{config.mixer}_{i}'))
        if config.layer_norm and mixer is not None:
          norms.append(layers.LayerNorm(f, dtype=dtype, name=f'norm_{i}b'))
        self.norms.append(norms)

  @property
  def output_channels(self):
    return self.config.filters * (2 if self.config.final_nonlinearity else 1)

  def __call__(self, x, context=None, training=False):
    h = self.proj_in(x)
    for i, conv_block in enumerate(self.conv_blocks):
      h = conv_block(h, context=context, training=training)
      norms = self.norms[i]
      if norms:
        h = norms[0](h)
      if self.mixers:
        h = self.mixers[i](h, self.positional_embedding, training=training)
        if len(norms) > 1:
          h = norms[1](h)
    if self.config.final_nonlinearity:
      h = layers.concat_elu(h)
    return h
