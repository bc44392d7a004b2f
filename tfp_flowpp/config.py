"""Model configuration: a plain, frozen dataclass (no flags in the library).

`ModelConfig` describes every architecture this package builds — Flow++,
its ablations, RealNVP, Glow and NICE — as data. The command-line tools
generate one absl flag per field (the ``help`` metadata is the flag's help),
and ``configs/*.flags`` files set them, so a paper model and a 2-core CPU
model differ only in their flag files.

Named options (``coupling``, ``network``, ``mixer``, ``dequantizer``, ...)
are the keys of registries that live beside what they register
(`bijectors.COUPLINGS`, `networks.COUPLING_NETWORKS`, ...); `CHOICES` maps
each such field to its registry, so a registered class is a valid choice and
a documented flag value at once. The flow specification grammar
(``flow`` / ``dequantizer_flow``) is in `flow_spec`.
"""

import dataclasses
import json
import types

from tfp_flowpp import flow_spec
from tfp_flowpp import precision
from tfp_flowpp.bijectors import affine_coupling
from tfp_flowpp.bijectors import couplings
from tfp_flowpp.bijectors import invertible_conv1x1
from tfp_flowpp.bijectors import splits
from tfp_flowpp.distributions import dequantization
from tfp_flowpp.networks import fused_attention
from tfp_flowpp.networks import coupling_networks
from tfp_flowpp.networks import gated_resnet

__all__ = ['ModelConfig', 'FlowToken', 'parse_flow', 'CHOICES']

FlowToken = flow_spec.FlowToken
parse_flow = flow_spec.parse_flow

# Field -> its registry (name -> documented class or function; the flag help
# quotes each docstring's first line) or a tuple of plain names (the field's
# help describes them). Read at use time, so an entry added to a registry is
# a valid value at once.
CHOICES = types.MappingProxyType({
    'coupling': couplings.COUPLINGS,
    'affine_scale': affine_coupling.SCALE_FNS,
    'norm': ('per_element', 'per_channel', 'none'),
    'conv1x1': ('per_half', 'full', 'none'),
    'conv1x1_init': invertible_conv1x1.INITS,
    'network': coupling_networks.COUPLING_NETWORKS,
    'mixer': gated_resnet.MIXERS,
    'dequantizer_mixer': gated_resnet.MIXERS,
    'context_mixer': gated_resnet.MIXERS,
    'dequantizer': dequantization.DEQUANTIZERS,
    'dequantizer_squash': dequantization.SQUASHES,
    'dtype': ('float32', 'float64'),
    'precision': precision.POLICIES,
    'attention_kernel': fused_attention.KERNELS,
    'conditioning': ('none', 'class'),
})


def _field(default, help_text, stored_default=dataclasses.MISSING):
  """A config field with its flag help.

  ``stored_default`` is the value a config.json written before the field
  existed implies (when it differs from ``default``, e.g. a new feature that
  is on by default but was off in older runs).
  """
  metadata = {'help': help_text}
  if stored_default is not dataclasses.MISSING:
    metadata['stored_default'] = stored_default
  return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Everything needed to rebuild a model (saved as config.json)."""

  image_shape: tuple = _field(
      (8, 8, 1), 'Image shape (H, W, C); set from the dataset by bin/train.')
  num_levels: int = _field(
      17, 'Discrete levels per pixel L (256 for uint8); set from the dataset.')
  flow: str = _field(
      'stripe:4 squeeze channel:2 stripe:3',
      f'Main flow spec: SPLIT:N ({"|".join(splits.SPLITS)}), squeeze, '
      'factor_out tokens, data->latent order.')
  coupling: str = _field('mix_logistic', 'Coupling layer.')
  components: int = _field(
      32, 'Logistic mixture components K per element (mix_logistic).')
  affine_scale: str = _field('exp_tanh', 'Scale of affine couplings.')
  norm: str = _field(
      'per_element', 'ActNorm before each coupling: per_element (official '
      'Flow++), per_channel (Glow) or none.')
  conv1x1: str = _field(
      'per_half', 'Invertible 1x1 conv before each coupling: per_half '
      '(Flow++ "Pointwise"), full (Glow) or none.')
  conv1x1_init: str = _field('noisy_identity', '1x1 conv initialisation.')
  swap_halves: bool = _field(
      True, 'Swap the two halves after each coupling (Flow++, RealNVP).')
  split_prior: bool = _field(
      False, "Glow's learned prior: an affine coupling of the factored-out "
      'half on the kept half before each factor_out.')
  final_scale: bool = _field(
      False, "NICE's diagonal scaling layer at the latent end (a learned "
      'per-element scale).')
  preprocess_alpha: float = _field(
      0.9, 'Preprocessing x -> logit(alpha*x/L + (1-alpha)/2); official 0.9.')
  network: str = _field('gated_resnet', 'Coupling network.')
  filters: int = _field(96, 'Coupling network width F.')
  blocks: int = _field(10, 'Gated blocks per coupling network.')
  mixer: str = _field(
      'attention', 'Per-block mixer of gated_resnet networks (none: blocks '
      'are gated conv -> LN only, and there is no positional embedding).')
  heads: int = _field(4, 'Attention heads.')
  attention_kernel: str = _field(
      'auto', 'How attention computes: fused (a fused CPU kernel compiled '
      'with g++ on first use: the [N, N] logits never leave the cache), '
      'tensorflow (TensorFlow ops) or auto (fused for 16-bit --precision '
      'where it can be built and runs: CPU, no XLA; else tensorflow). The '
      'same function either way; SavedModel exports always hold TensorFlow '
      'ops. Not an architecture field.')
  layer_norm: bool = _field(True, 'Layer norm after each conv/mixer block.')
  dropout: float = _field(0.2, 'Dropout rate inside coupling networks.')
  weight_norm: bool = _field(
      False, 'Weight-normalised convolutions (official ImageNet-32 model).')
  final_nonlinearity: bool = _field(
      False, 'concat_elu before the output conv (official ImageNet models).')
  glow_hidden: int = _field(512, 'Hidden channels of the glow network.')
  dequantizer: str = _field('variational', 'Dequantization noise q(u|x).')
  dequantizer_squash: str = _field(
      'normal_cdf', 'Final map of the variational dequantizer flow to (0, 1) '
      '(with normal_cdf the importance weights have finite variance; '
      "sigmoid's light tails make them heavy-tailed).")
  dequantizer_flow: str = _field(
      'stripe:4', 'Dequantizer flow spec (one split kind, no squeeze).')
  dequantizer_filters: int = _field(96, 'Dequantizer coupling network width.')
  dequantizer_blocks: int = _field(2, 'Dequantizer gated blocks per coupling.')
  dequantizer_mixer: str = _field('attention',
                                  'Dequantizer per-block mixer (as --mixer).')
  context_channels: int = _field(
      32, 'Width of the dequantizer context network (features of x).')
  context_blocks: int = _field(3, 'Gated conv blocks in the context network.')
  context_mixer: str = _field('none', 'Context network mixer (as --mixer).')
  context_layer_norm: bool = _field(
      False, 'Layer norm in the context network (official ImageNet models).')
  dtype: str = _field(
      'float32', 'Variable dtype and dtype of all flow arithmetic (log-dets, '
      'coupling transforms, bounds).')
  precision: str = _field(
      'auto', 'What the conditioner networks compute in: float32 (the '
      '--dtype), mixed_bfloat16, mixed_float16 (dynamic loss scaling) or '
      'auto (mixed_bfloat16 on CPUs with amx_bf16/avx512_bf16 and GPUs of '
      'compute capability >= 8, else float32). Variables, optimizer state '
      'and the flow arithmetic stay in --dtype; not an architecture field '
      '(a run may resume under another precision).',
      stored_default='float32')
  seed: int = _field(0, 'Seed for parameter initialisation.')
  conditioning: str = _field(
      'none', 'none: p(x); class: a class-conditional model p(x | y) of '
      'labelled data (the parts are selected by class_context, '
      'class_dequantizer and class_prior).', stored_default='none')
  num_classes: int = _field(
      0, 'Number of classes K of a class-conditional model; set from the '
      'dataset by bin/train.', stored_default=0)
  class_labels: tuple = _field(
      (), 'The data set label of each model class 0..K-1 (set from the '
      'dataset).', stored_default=())
  class_names: tuple = _field(
      (), 'Names of the model classes 0..K-1, if the data set has them (set '
      'from the dataset).', stored_default=())
  class_embedding: int = _field(
      16, 'Width E of the learned label embedding fed as context to the '
      'coupling networks (class conditioning).')
  class_context: bool = _field(
      True, 'Class conditioning: the label embedding reaches every coupling '
      'network of the flow (broadcast over H x W).')
  class_dequantizer: bool = _field(
      True, 'Class conditioning: the variational dequantizer q(u | x, y) '
      'sees the label embedding too.')
  class_prior: bool = _field(
      True, "Class conditioning: Glow's class-conditional prior, a learned "
      'mean and log-scale per class for every latent dimension.')

  def __post_init__(self):
    object.__setattr__(self, 'image_shape',
                       tuple(int(d) for d in self.image_shape))
    if len(self.image_shape) != 3 or min(self.image_shape) < 1:
      raise ValueError(f'image_shape must be (H, W, C), got '
                       f'{self.image_shape}.')
    if self.num_levels < 2:
      raise ValueError(f'num_levels must be >= 2, got {self.num_levels}.')
    for name, choices in CHOICES.items():
      value = getattr(self, name)
      if value not in choices:
        raise ValueError(f'{name} must be one of {tuple(choices)}, got '
                         f'{value!r}.')
    if self.components < 1:
      raise ValueError(f'components must be >= 1, got {self.components}.')
    if not 0. < self.preprocess_alpha <= 1.:
      raise ValueError('preprocess_alpha must be in (0, 1], got '
                       f'{self.preprocess_alpha}.')
    object.__setattr__(self, 'class_labels',
                       tuple(int(v) for v in self.class_labels))
    object.__setattr__(self, 'class_names',
                       tuple(str(v) for v in self.class_names))
    if self.num_classes < 0 or self.class_embedding < 0:
      raise ValueError(f'num_classes and class_embedding must be >= 0, got '
                       f'{self.num_classes} and {self.class_embedding}.')
    for name in ('class_labels', 'class_names'):
      if getattr(self, name) and len(getattr(self, name)) != self.num_classes:
        raise ValueError(f'{name} must name all {self.num_classes} classes, '
                         f'got {getattr(self, name)}.')
    if self.conditioning == 'class' and not (
        (self.class_embedding and
         (self.class_context or self.class_dequantizer)) or self.class_prior):
      raise ValueError(
          'conditioning=class needs at least one conditional part: '
          'class_prior, or class_embedding > 0 with class_context or '
          'class_dequantizer.')
    parse_flow(self.flow)
    if self.dequantizer == 'variational':
      tokens = parse_flow(self.dequantizer_flow)
      kinds = {t.split for t in tokens if t.kind == 'split'}
      if any(t.kind != 'split' for t in tokens) or len(kinds) != 1:
        raise ValueError(
            f'dequantizer_flow {self.dequantizer_flow!r} must use one split '
            'kind and no squeeze/factor_out (its couplings share the context '
            'features of x).')

  def to_json(self):
    return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

  @classmethod
  def from_json(cls, text):
    """Reads `to_json` output, also from older versions of tfp_flowpp.

    A field the stored config lacks was added later and takes the value that
    older runs implied (its ``stored_default``, else its default); a field
    this version does not know means a newer version wrote the file.
    """
    values = json.loads(text)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
      raise ValueError(
          f'Stored model config has fields this version of tfp_flowpp does '
          f'not know ({", ".join(unknown)}); it was written by a newer '
          'version: upgrade tfp_flowpp to read it.')
    for name in sorted(set(fields) - set(values)):
      values[name] = fields[name].metadata.get('stored_default',
                                               fields[name].default)
    return cls(**values)

  def replace(self, **changes):
    return dataclasses.replace(self, **changes)
