"""The Flow++ conditioner trunk: a stack of gated conv / attention blocks.

Used both as the coupling network body and as the variational dequantizer's
context network; see `GatedResNet` and `GatedResNetConfig`.
"""

import dataclasses

import tensorflow as tf

from tfp_flowpp.networks import blocks
from tfp_flowpp.networks import fused_attention
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
  """Hyperparameters of a `GatedResNet`.

  The architecture (see `GatedResNet`) is

  ```none
  conv3×3 to F → B × [gated conv → LN → mixer → LN] (→ concat_elu)
  ```

  with ``F = filters`` and ``B = blocks`` [(Ho et al., 2019)][1].

  Attributes:
    filters: width F.
    blocks: number of blocks B (0 allowed).
    mixer: ``'attention'`` (gated multi-head self-attention, Flow++),
      ``'pointwise'`` (the official parameter-matched no-attention ablation)
      or ``'none'`` (each block is [gated conv → LN], the official ImageNet
      dequantizer).
    heads: attention heads; must divide ``filters`` for ``'attention'``.
    attention_kernel: how attention is computed
      (`fused_attention.KERNELS`): ``'auto'``, ``'fused'`` or
      ``'tensorflow'``; the same function either way.
    layer_norm: the layer norms after the gated conv and the mixer.
    dropout: rate in [0, 1) inside every block (active when training).
    weight_norm: weight-normalised convolutions.
    second_kernel_size: kernel of the gated conv's second convolution (1 in
      the coupling networks, 3 in the official context network).
    final_nonlinearity: a final concat_elu (output width 2F).

  #### Examples

  >>> from tfp_flowpp import networks as fn
  >>> fn.GatedResNetConfig(filters=8, blocks=2, heads=2).mixer
  'attention'
  >>> fn.GatedResNetConfig(filters=10, heads=4)
  Traceback (most recent call last):
    ...
  ValueError: filters=10 must be divisible by heads=4.

  #### References

  [1]: Jonathan Ho, Xi Chen, Aravind Srinivas, Yan Duan and Pieter Abbeel.
       Flow++: Improving Flow-Based Generative Models with Variational
       Dequantization and Architecture Design. In _International Conference
       on Machine Learning_, 2019. https://arxiv.org/abs/1902.00275
  """
  filters: int = 96
  blocks: int = 10
  mixer: str = 'attention'
  heads: int = 4
  attention_kernel: str = 'auto'
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
    if self.attention_kernel not in fused_attention.KERNELS:
      raise ValueError('attention_kernel must be one of '
                       f'{fused_attention.KERNELS}, got '
                       f'{self.attention_kernel!r}.')
    if self.mixer == 'attention' and self.filters % self.heads:
      raise ValueError(f'filters={self.filters} must be divisible by '
                       f'heads={self.heads}.')
    if not 0. <= self.dropout < 1.:
      raise ValueError(f'dropout must be in [0, 1), got {self.dropout}.')


class GatedResNet(tf.Module):
  """``[N, H, W, C_in] → [N, H, W, F]`` (or 2F after the final concat_elu).

  The Flow++ conditioner trunk [(Ho et al., 2019)][1], §3.3: a residual
  stack [(He et al., 2016)][2] of gated conv blocks (`GatedConvBlock`), each
  followed by a mixer,

  ```none
  h = conv3×3(x)                                        → F channels
  B × [h = LN(GatedConvBlock(h, context));  h = LN(mixer(h, P))]
  (h = concat_elu(h))                          → 2F, if final_nonlinearity
  ```

  where the mixer is a `GatedAttentionBlock` (``'attention'``), a
  `PointwiseMaxoutBlock` (``'pointwise'``) or absent (``'none'``, then each
  block is [gated conv → LN]); LN is `LayerNorm` (if ``layer_norm``), and
  ``P`` a learned positional embedding ``[H, W, F]`` (initial std 0.01)
  shared by all blocks. It is both the coupling networks' body
  (`FlowppCouplingNetwork`) and the variational dequantizer's context
  network.

  #### Examples

  >>> import numpy as np
  >>> import tensorflow as tf
  >>> from tfp_flowpp import networks as fn
  >>> config = fn.GatedResNetConfig(
  ...     filters=8, blocks=2, heads=2, final_nonlinearity=True)
  >>> trunk = fn.GatedResNet((4, 4, 3), config, rng=np.random.default_rng(0))
  >>> trunk.output_channels
  16
  >>> trunk(tf.random.stateless_normal([2, 4, 4, 3], seed=[1, 2])).shape
  TensorShape([2, 4, 4, 16])
  >>> len(trunk.conv_blocks), len(trunk.mixers)
  (2, 2)
  >>> trunk.positional_embedding.shape
  TensorShape([4, 4, 8])

  #### References

  [1]: Jonathan Ho, Xi Chen, Aravind Srinivas, Yan Duan and Pieter Abbeel.
       Flow++: Improving Flow-Based Generative Models with Variational
       Dequantization and Architecture Design. In _International Conference
       on Machine Learning_, 2019. https://arxiv.org/abs/1902.00275

  [2]: Kaiming He, Xiangyu Zhang, Shaoqing Ren and Jian Sun. Deep Residual
       Learning for Image Recognition. In _Computer Vision and Pattern
       Recognition_, 2016. https://arxiv.org/abs/1512.03385
  """

  def __init__(self,
               input_shape,
               config,
               context_channels=None,
               dtype=tf.float32,
               compute_dtype=None,
               rng=None,
               name=None):
    """Creates the network's variables.

    Args:
      input_shape: ``(H, W, C_in)``.
      config: `GatedResNetConfig`.
      context_channels: channels of the conditioning context fed to every
        `GatedConvBlock`, or None.
      dtype: variable dtype.
      compute_dtype: dtype the network computes in (inputs are cast to it;
        the output has the input's dtype); None = the input's.
      rng: `np.random.Generator` for the initial values; None = fresh.
      name: module name.
    """
    super().__init__(name=name)
    self.compute_dtype = compute_dtype
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
    out_dtype = x.dtype
    x, context = layers.boundary_cast(self.compute_dtype, x, context)
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
    return tf.cast(h, out_dtype)
