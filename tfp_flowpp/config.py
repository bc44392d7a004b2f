"""Model configuration: a plain, frozen dataclass (no flags in the library).

`ModelConfig` describes every architecture this package builds — Flow++,
its ablations, RealNVP, Glow and NICE — as data. The command-line tools
generate one absl flag per field (the ``help`` metadata is the flag's help),
and ``configs/*.flags`` files set them, so a paper model and a 2-core CPU
model differ only in their flag files.

Flow specification (``flow`` / ``dequantizer_flow``): whitespace- or
comma-separated tokens applied in the data → latent direction,

* ``SPLIT:N`` — split into the paired layout (``stripe``: alternate columns,
  the official Flow++ "checkerboard"; ``checkerboard``: true (i+j) parity;
  ``channel``: channel halves), then ``N`` flow steps
  ``[norm → 1×1 conv → coupling → swap halves]``, then merge back;
* ``squeeze`` — space-to-depth; everything after it runs at the lower
  resolution and is un-squeezed at the end, so latents keep the image shape;
* ``factor_out`` — half of the channels leave the flow (multi-scale
  architecture); everything after it transforms the kept half only.

Examples: Flow++ CIFAR-10 ``'stripe:4 squeeze channel:2 stripe:3'``;
Glow ``'squeeze channel:32 factor_out squeeze channel:32 factor_out squeeze
channel:32'``.
"""

import dataclasses
import json
import re

__all__ = ['ModelConfig', 'FlowToken', 'parse_flow', 'CHOICES']

CHOICES = {
    'coupling': ('mix_logistic', 'affine', 'additive'),
    'affine_scale': ('exp_tanh', 'sigmoid'),
    'norm': ('per_element', 'per_channel', 'none'),
    'conv1x1': ('per_half', 'full', 'none'),
    'conv1x1_init': ('noisy_identity', 'orthogonal'),
    'network': ('gated_resnet', 'glow'),
    'mixer': ('attention', 'pointwise', 'none'),
    'dequantizer': ('variational', 'uniform'),
    'dequantizer_squash': ('normal_cdf', 'sigmoid'),
    'dtype': ('float32', 'float64'),
}

_SPLITS = ('stripe', 'checkerboard', 'channel')


@dataclasses.dataclass(frozen=True)
class FlowToken:
  """One parsed flow-spec token: ``kind`` in {split, squeeze, factor_out}."""
  kind: str
  split: str = ''
  steps: int = 0


def parse_flow(spec):
  """Parses a flow specification string into `FlowToken`s.

  Raises:
    ValueError: with a one-line message naming the bad token.
  """
  tokens = []
  for raw in re.split(r'[\s,]+', spec.strip()):
    if not raw:
      continue
    if raw in ('squeeze', 'factor_out'):
      tokens.append(FlowToken(raw))
      continue
    match = re.fullmatch(r'([a-z]+):(\d+)', raw)
    if not match or match.group(1) not in _SPLITS or int(match.group(2)) < 1:
      raise ValueError(
          f'Bad flow token {raw!r} in {spec!r}: expected SPLIT:N with SPLIT in '
          f'{_SPLITS} and N >= 1, "squeeze" or "factor_out".')
    tokens.append(FlowToken('split', match.group(1), int(match.group(2))))
  if not any(t.kind == 'split' for t in tokens):
    raise ValueError(f'Flow spec {spec!r} has no coupling steps.')
  return tokens


def _field(default, help_text):
  return dataclasses.field(default=default, metadata={'help': help_text})


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Everything needed to rebuild a model (saved as config.json)."""

  image_shape: tuple = _field(
      (8, 8, 1), 'Image shape (H, W, C); set from the dataset by bin/train.')
  num_levels: int = _field(
      17, 'Discrete levels per pixel L (256 for uint8); set from the dataset.')
  flow: str = _field(
      'stripe:4 squeeze channel:2 stripe:3',
      'Main flow spec: SPLIT:N (stripe|checkerboard|channel), squeeze, '
      'factor_out tokens, data->latent order.')
  coupling: str = _field(
      'mix_logistic',
      'Coupling type: mix_logistic (Flow++), affine (RealNVP/Glow), '
      'additive (NICE).')
  components: int = _field(
      32, 'Logistic mixture components K per element (mix_logistic).')
  affine_scale: str = _field(
      'exp_tanh', 'Affine coupling scale: exp_tanh (Flow++/RealNVP) or '
      'sigmoid (Glow).')
  norm: str = _field(
      'per_element', 'ActNorm before each coupling: per_element (official '
      'Flow++), per_channel (Glow) or none.')
  conv1x1: str = _field(
      'per_half', 'Invertible 1x1 conv before each coupling: per_half '
      '(Flow++ "Pointwise"), full (Glow) or none.')
  conv1x1_init: str = _field(
      'noisy_identity', '1x1 conv init: noisy_identity (I + 0.001 N, Flow++) '
      'or orthogonal (Glow).')
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
  network: str = _field(
      'gated_resnet', 'Coupling network: gated_resnet (Flow++ conv + '
      'attention blocks) or glow (conv3x3-relu-conv1x1-relu-zero conv3x3).')
  filters: int = _field(96, 'Coupling network width F.')
  blocks: int = _field(10, 'Gated blocks per coupling network.')
  mixer: str = _field(
      'attention', 'Per-block mixer: attention (Flow++), pointwise '
      '(parameter-matched no-attention ablation) or none.')
  heads: int = _field(4, 'Attention heads.')
  layer_norm: bool = _field(True, 'Layer norm after each conv/mixer block.')
  dropout: float = _field(0.2, 'Dropout rate inside coupling networks.')
  weight_norm: bool = _field(
      False, 'Weight-normalised convolutions (official ImageNet-32 model).')
  final_nonlinearity: bool = _field(
      False, 'concat_elu before the output conv (official ImageNet models).')
  glow_hidden: int = _field(512, 'Hidden channels of the glow network.')
  dequantizer: str = _field(
      'variational', 'Dequantization: variational (Flow++ flow-based q(u|x)) '
      'or uniform (u ~ U[0,1)).')
  dequantizer_squash: str = _field(
      'normal_cdf', 'Final map of the dequantizer flow to (0, 1): normal_cdf '
      '(u = Phi(t): q starts as exactly uniform dequantization, and importance '
      'weights have finite variance) or sigmoid (the official code; q starts '
      'logit-normal, whose light tails give heavy-tailed importance weights).')
  dequantizer_flow: str = _field(
      'stripe:4', 'Dequantizer flow spec (one split kind, no squeeze).')
  dequantizer_filters: int = _field(96, 'Dequantizer coupling network width.')
  dequantizer_blocks: int = _field(2, 'Dequantizer gated blocks per coupling.')
  dequantizer_mixer: str = _field(
      'attention', 'Dequantizer per-block mixer (attention|pointwise|none).')
  context_channels: int = _field(
      32, 'Width of the dequantizer context network (features of x).')
  context_blocks: int = _field(3, 'Gated conv blocks in the context network.')
  context_mixer: str = _field(
      'none', 'Context network mixer (attention|pointwise|none).')
  context_layer_norm: bool = _field(
      False, 'Layer norm in the context network (official ImageNet models).')
  dtype: str = _field('float32', 'Compute/variable dtype.')
  seed: int = _field(0, 'Seed for parameter initialisation.')

  def __post_init__(self):
    object.__setattr__(self, 'image_shape',
                       tuple(int(d) for d in self.image_shape))
    if len(self.image_shape) != 3 or min(self.image_shape) < 1:
      raise ValueError(f'image_shape must be (H, W, C), got '
                       f'{self.image_shape}.')
    if self.num_levels < 2:
      raise ValueError(f'num_levels must be >= 2, got {self.num_levels}.')
    for name, choices in CHOICES.items():
      if name == 'mixer':
        values = {
            'mixer': self.mixer,
            'dequantizer_mixer': self.dequantizer_mixer,
            'context_mixer': self.context_mixer
        }
      else:
        values = {name: getattr(self, name)}
      for field_name, value in values.items():
        if value not in choices:
          raise ValueError(f'{field_name} must be one of {choices}, got '
                           f'{value!r}.')
    if self.components < 1:
      raise ValueError(f'components must be >= 1, got {self.components}.')
    if not 0. < self.preprocess_alpha <= 1.:
      raise ValueError('preprocess_alpha must be in (0, 1], got '
                       f'{self.preprocess_alpha}.')
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
    values = json.loads(text)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    missing = sorted(known - set(values))
    if unknown or missing:
      raise ValueError(
          f'Stored model config does not match this version of tfp_flowpp '
          f'(unknown fields {unknown}, missing fields {missing}); rebuild it '
          'with the version that wrote it.')
    return cls(**values)

  def replace(self, **changes):
    return dataclasses.replace(self, **changes)
