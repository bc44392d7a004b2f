"""Every configs/*.flags parses, builds, and has its parameter count pinned.

The paper configs are built and counted here (not trained). Official counts
come from the official Flow++ launchers; ours match them exactly except
ImageNet-64 / CelebA-64, whose official count includes 786,432 positional
embedding parameters the official attention-free dequantizer couplings create
but never use (we omit them: -1.07%).

Each config also resolves to exactly the `ModelConfig`, `DataConfig` and
`TrainConfig` pinned in tests/data/resolved_configs.json. That file was
written from the flag files of commit 4ac9bec, before the ablations became
includes of their base config (``--flagfile=BASE.flags`` plus overrides), so
it shows the rewrite changed nothing; change it only with a config change.
"""

import dataclasses
import glob
import json
import os
import subprocess
import sys

from absl import flags
import pytest

import configs_util
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


parse = configs_util.flag_values


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


def _resolved(path):
  values = parse(path)
  configs = {
      'model': model_config_for(values),
      'data': flowpp_flags.data_config(values),
      'train': flowpp_flags.train_config(values)
  }
  # Through JSON, as the pins were written (tuples become lists).
  return json.loads(
      json.dumps({k: dataclasses.asdict(v) for k, v in configs.items()}))


def test_every_config_resolves_to_its_pinned_configs():
  with open(os.path.join(ROOT, 'tests', 'data', 'resolved_configs.json')) as f:
    pinned = json.load(f)
  assert sorted(pinned) == sorted(_name(p) for p in CONFIGS)
  changed = []
  for path in CONFIGS:
    resolved = _resolved(path)
    for section, fields in pinned[_name(path)].items():
      # Fields added since keep their defaults; only the pinned ones count.
      changed += [
          f'{_name(path)}: {section}.{k} = {resolved[section].get(k, "?")!r}, '
          f'pinned {v!r}' for k, v in fields.items()
          if resolved[section].get(k, '?') != v
      ]
  assert not changed, '\n'.join(changed)


# Variant -> (base it includes, what it changes).
VARIANTS = {
    'cifar10_flowpp_uniform_dequant': ('cifar10_flowpp', {
        'dequantizer': 'uniform',
        'filters': 104
    }),
    'cifar10_flowpp_affine': ('cifar10_flowpp', {
        'coupling': 'affine',
        'filters': 108,
        'dequantizer_filters': 108
    }),
    'cifar10_flowpp_no_attention': ('cifar10_flowpp', {
        'mixer': 'pointwise',
        'dequantizer_mixer': 'pointwise'
    }),
    'fashion_mnist_flowpp_uniform_dequant': ('fashion_mnist_flowpp', {
        'dequantizer': 'uniform',
        'filters': 50,
        'heads': 5
    }),
    'fashion_mnist_flowpp_affine': ('fashion_mnist_flowpp', {
        'coupling': 'affine',
        'filters': 52
    }),
    'fashion_mnist_flowpp_no_attention': ('fashion_mnist_flowpp', {
        'mixer': 'pointwise',
        'dequantizer_mixer': 'pointwise'
    }),
    'celeba64_5bit_flowpp': ('imagenet64_flowpp', {
        'dataset': 'celeb_a',
        'image_size': 64,
        'num_bits': 5,
        'batch_size': 56,
        'init_batch_size': 56,
        'learning_rate': 4e-5,
        'warmup_steps': 20000,
        'lr_decay_rate': 0.9995,
        'min_learning_rate': 1e-5
    }),
}


def _flag_lines(name):
  with open(configs_util.config_path(name)) as f:
    return [line.strip() for line in f
            if line.strip() and not line.startswith(('#', '//'))]


@pytest.mark.parametrize('name', sorted(VARIANTS))
def test_variant_is_its_base_plus_overrides(name):
  base, changes = VARIANTS[name]
  include, *overrides = _flag_lines(name)
  assert include == f'--flagfile={base}.flags'
  base_values = vars_of(parse(configs_util.config_path(base)))
  values = vars_of(parse(configs_util.config_path(name)))
  diff = {k: v for k, v in values.items() if base_values[k] != v}
  assert diff == changes
  # Every override line changes something: nothing repeats the base.
  assert sorted(line[2:].split('=')[0] for line in overrides) == sorted(diff)


def test_configs_resolve_from_any_directory(tmp_path, monkeypatch):
  expected = _resolved(configs_util.config_path('cifar10_flowpp_affine'))
  monkeypatch.chdir(tmp_path)  # absl alone would look for ./cifar10_flowpp.flags.
  assert _resolved(configs_util.config_path('cifar10_flowpp_affine')) == expected
  monkeypatch.chdir(configs_util.CONFIGS_DIR)
  assert _resolved('cifar10_flowpp_affine.flags') == expected
  # The same through a bin/ tool's flag parsing, in a fresh process.
  result = subprocess.run(
      [sys.executable, os.path.join(ROOT, 'bin', 'train'),
       f'--flagfile={configs_util.config_path("cifar10_flowpp_affine")}',
       '--helpfull'], cwd=tmp_path, capture_output=True, text=True,
      timeout=120, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3'))
  # absl prints the help after parsing the flags and exits 1; a flag file
  # that cannot be read is a one-line `train: error: ...` and exit 2.
  assert result.returncode == 1 and 'train: error' not in result.stderr, (
      result.stderr[-2000:])
  assert '--dequantizer_filters' in result.stdout


def test_flagfile_includes_report_bad_files(tmp_path):
  (tmp_path / 'a.flags').write_text('--filters=3\n--flagfile=b.flags\n')
  (tmp_path / 'b.flags').write_text('# b\n--flagfile=a.flags\n')
  with pytest.raises(flags.Error, match='circular --flagfile include: '):
    parse(tmp_path / 'a.flags')
  (tmp_path / 'b.flags').write_text('--flagfile=sub/missing.flags\n')
  with pytest.raises(flags.CantOpenFlagFileError,
                     match=str(tmp_path / 'sub' / 'missing.flags')):
    parse(tmp_path / 'a.flags')
  (tmp_path / 'sub').mkdir()
  (tmp_path / 'sub' / 'missing.flags').write_text('--blocks=7\n')
  values = parse(tmp_path / 'a.flags', ['--filters=5'])
  assert (values.filters, values.blocks) == (5, 7)  # Later flags win.


def vars_of(values):
  return {
      name: values[name].value
      for name in values
      if name in _config_field_names()
  }


def _config_field_names():
  return {
      f.name
      for cls in flowpp_flags.CONFIG_CLASSES
      for f in dataclasses.fields(cls)
  }
