"""Every configs/*.flags parses, builds, and has its parameter count pinned.

The paper configs are built and counted here (not trained). Official counts
come from the official Flow++ launchers; ours match them exactly except
ImageNet-64 / CelebA-64, whose official count includes 786,432 positional
embedding parameters the official attention-free dequantizer couplings create
but never use (we omit them: -1.07%).
"""

import glob
import os

from absl import flags
import pytest

import flowpp_flags
from tfp_flowpp import model_builder

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(glob.glob(os.path.join(ROOT, 'configs', '*.flags')))

# Image shape and levels per dataset (tfds datasets are not available offline
# here, so their shapes are stated; the offline ones are also loaded in
# test_small_configs_take_a_training_step).
DATASET_SHAPES = {
    'cifar10': ((32, 32, 3), 256),
    'imagenet_resized/32x32': ((32, 32, 3), 256),
    'imagenet_resized/64x64': ((64, 64, 3), 256),
    'celeb_a': ((64, 64, 3), 256),
    'digits': ((8, 8, 1), 17),
    'fashion_mnist': ((28, 28, 1), 256),
}

PINNED = {
    'celeba64_5bit_flowpp': 72_703_528,
    'cifar10_flowpp': 31_443_440,
    'cifar10_flowpp_affine': 32_045_708,
    'cifar10_flowpp_no_attention': 31_443_440,
    'cifar10_flowpp_uniform_dequant': 32_324_408,
    'cifar10_glow': 43_951_692,
    'cifar10_nice': 2_941_988,
    'cifar10_realnvp': 11_800_006,
    'fashion_mnist_flowpp': 1_389_248,
    'fashion_mnist_flowpp_affine': 1_396_512,
    'fashion_mnist_flowpp_no_attention': 1_389_248,
    'fashion_mnist_flowpp_uniform_dequant': 1_405_248,
    'fashion_mnist_glow': 275_948,
    'imagenet32_flowpp': 168_955_724,
    'imagenet64_flowpp': 72_703_528,
    'quickstart': 618_928,
    'tiny': 8_782,
}

OFFICIAL = {
    'cifar10_flowpp': 31_443_440,
    'cifar10_flowpp_affine': 32_045_708,
    'cifar10_flowpp_no_attention': 31_443_440,
    'cifar10_flowpp_uniform_dequant': 32_324_408,
    'imagenet32_flowpp': 168_955_724,
    'imagenet64_flowpp': 73_489_960,
    'celeba64_5bit_flowpp': 73_489_960,
}

SMALL = ('quickstart', 'tiny', 'fashion_mnist_flowpp',
         'fashion_mnist_flowpp_affine', 'fashion_mnist_flowpp_no_attention',
         'fashion_mnist_flowpp_uniform_dequant', 'fashion_mnist_glow')


def _name(path):
  return os.path.splitext(os.path.basename(path))[0]


def parse(path, extra=()):
  values = flags.FlagValues()
  flowpp_flags.define_config_flags(values)
  values(['test', f'--flagfile={path}', *extra])
  return values


def model_config_for(values):
  shape, levels = DATASET_SHAPES[values.dataset]
  if values.image_size:
    shape = (values.image_size, values.image_size, shape[2])
  if values.num_bits:
    levels = 2**values.num_bits
  return flowpp_flags.model_config(values, shape, levels)


def test_every_config_is_pinned():
  assert sorted(_name(p) for p in CONFIGS) == sorted(PINNED)


@pytest.mark.parametrize('path', CONFIGS, ids=_name)
def test_config_builds_with_pinned_parameter_count(path):
  values = parse(path)
  flowpp_flags.data_config(values)
  flowpp_flags.train_config(values)
  model = model_builder.build_model(model_config_for(values))
  count = model_builder.count_parameters(model)
  name = _name(path)
  official = OFFICIAL.get(name)
  note = (
      f' (official {official:,}: {100 * (count - official) / official:+.2f}%)'
      if official else '')
  print(f'{name}: {count:,} parameters{note}')
  assert count == PINNED[name]
  if official:
    assert abs(count - official) / official < 0.02


def test_command_line_overrides_flagfile():
  path = os.path.join(ROOT, 'configs', 'quickstart.flags')
  values = parse(path, ['--filters=64', '--train_steps=7'])
  assert values.filters == 64 and values.train_steps == 7
  assert values.components == 8  # From the file.


def test_ablations_differ_from_base_only_where_stated():
  base = vars_of(parse(os.path.join(ROOT, 'configs', 'cifar10_flowpp.flags')))
  expected = {
      'cifar10_flowpp_uniform_dequant': {
          'dequantizer': 'uniform',
          'filters': 104
      },
      'cifar10_flowpp_affine': {
          'coupling': 'affine',
          'filters': 108,
          'dequantizer_filters': 108
      },
      'cifar10_flowpp_no_attention': {
          'mixer': 'pointwise',
          'dequantizer_mixer': 'pointwise'
      },
  }
  for name, changes in expected.items():
    values = vars_of(parse(os.path.join(ROOT, 'configs', f'{name}.flags')))
    diff = {k: v for k, v in values.items() if base[k] != v}
    assert diff == changes, name


def vars_of(values):
  return {
      name: values[name].value
      for name in values
      if name in _config_field_names()
  }


def _config_field_names():
  import dataclasses  # pylint: disable=g-import-not-at-top
  return {
      f.name
      for cls in flowpp_flags.CONFIG_CLASSES
      for f in dataclasses.fields(cls)
  }
