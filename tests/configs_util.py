"""Configs of configs/*.flags for tests, resolved the way the bin/ tools do.

`tiny_model_config`, `tiny_data_config` and `tiny_train_config` are
``configs/tiny.flags`` (4x4 digits, 17 levels, a two-coupling Flow++ with a
one-coupling variational dequantizer, a 20-step run) with a test's overrides,
so the tests share one tiny model instead of each writing its own.
"""

import dataclasses
import functools
import os

from absl import flags

import flowpp_flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS_DIR = os.path.join(ROOT, 'configs')
TINY_IMAGE_SHAPE = (4, 4, 1)  # digits at --image_size=4.
TINY_NUM_LEVELS = 17


def config_path(name):
  return os.path.join(CONFIGS_DIR, f'{name}.flags')


def flag_values(path, extra=()):
  """Config flag values of a flag file (+ ``--flag=value`` overrides)."""
  values = flags.FlagValues()
  flowpp_flags.define_config_flags(values)
  flowpp_flags.parse_flags(['test', f'--flagfile={path}', *extra], values)
  return values


@functools.lru_cache(maxsize=None)
def _tiny():
  values = flag_values(config_path('tiny'))
  return (flowpp_flags.model_config(values, TINY_IMAGE_SHAPE, TINY_NUM_LEVELS),
          flowpp_flags.data_config(values), flowpp_flags.train_config(values))


def tiny_model_config(**overrides):
  """`ModelConfig` of configs/tiny.flags with `overrides` (field=value)."""
  return dataclasses.replace(_tiny()[0], **overrides)


def tiny_data_config(**overrides):
  """`DataConfig` of configs/tiny.flags with `overrides`."""
  return dataclasses.replace(_tiny()[1], **overrides)


def tiny_train_config(**overrides):
  """`TrainConfig` of configs/tiny.flags with `overrides`."""
  return dataclasses.replace(_tiny()[2], **overrides)
