"""absl flags shared by the bin/ tools, generated from the library's configs.

Every field of `ModelConfig`, `DataConfig` and `TrainConfig` becomes one flag
with the field's ``help`` text (``--helpfull`` lists them all), so a
``configs/NAME.flags`` file is just those fields as data. A field with
choices (`config.CHOICES`) becomes an enum flag over its registry's names,
and its help adds each registered option's docstring summary. The library
itself never defines flags; only the bin/ programs call `define_*`.

A flag file may include another with a ``--flagfile=OTHER.flags`` line (later
lines override it): the ablation configs are their base config plus a few
lines. Such an include is relative to the including file, so the configs work
from any current directory (`read_flagfiles`).
"""

import collections.abc
import dataclasses
import os
import sys
import types
import typing

from absl import flags

from tfp_flowpp import config as model_config_lib
from tfp_flowpp import data as data_lib
from tfp_flowpp.training import config as train_config_lib

# Fields the data decides (the model is built for the dataset's images).
_DERIVED_MODEL_FIELDS = ('image_shape', 'num_levels', 'num_classes',
                         'class_labels', 'class_names')
_CHOICES = dict(model_config_lib.CHOICES)
_CHOICES.update({
    'lr_decay': train_config_lib.LR_DECAYS,
    'distribution': train_config_lib.DISTRIBUTIONS,
})
CONFIG_CLASSES = (model_config_lib.ModelConfig, data_lib.DataConfig,
                  train_config_lib.TrainConfig)


def option_help(choices):
  """'name: summary; ...' for the documented entries of a registry.

  The summary is the first line of the entry's own docstring (a class's
  ``__doc__``, not inherited); entries without one (e.g. ``None`` for "no
  mixer", described by the field's help) and plain tuples of names give
  nothing.
  """
  if not isinstance(choices, collections.abc.Mapping):
    return ''
  parts = []
  for name, value in choices.items():
    doc = (getattr(value, '__doc__', None) or '').strip()
    if value is not None and doc:
      summary = doc.splitlines()[0].strip().replace('`', '').rstrip('.')
      parts.append(f'{name}: {summary}')
  return '; '.join(parts) + '.' if parts else ''


def _define_field(field, hint, flag_values):
  name, default = field.name, field.default
  help_text = field.metadata.get('help', name)
  if name in flag_values:
    return  # Shared field (e.g. seed) defined by an earlier config class.
  origin = typing.get_origin(hint)
  if origin in (typing.Union, types.UnionType):
    args = {a for a in typing.get_args(hint) if a is not type(None)}
    hint = float if args == {int, float} else args.pop()
    origin = typing.get_origin(hint)
  if hint is bool:
    flags.DEFINE_bool(name, default, help_text, flag_values=flag_values)
  elif hint is int:
    flags.DEFINE_integer(name, default, help_text, flag_values=flag_values)
  elif hint is float:
    flags.DEFINE_float(name, default, help_text, flag_values=flag_values)
  elif name in _CHOICES:
    choices = _CHOICES[name]
    options = option_help(choices)
    flags.DEFINE_enum(
        name,
        default,
        list(choices),
        f'{help_text} {options}' if options else help_text,
        flag_values=flag_values)
  elif hint is str:
    flags.DEFINE_string(name, default, help_text, flag_values=flag_values)
  elif hint is tuple or origin is tuple:
    flags.DEFINE_list(
        name, [str(v) for v in default or ()],
        help_text + ' Comma-separated.',
        flag_values=flag_values)
  else:
    raise TypeError(f'No flag type for {name}: {hint!r}')


def define_config_flags(flag_values=flags.FLAGS, classes=CONFIG_CLASSES):
  """Defines one flag per config field (skipping data-derived ones)."""
  for cls in classes:
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
      if cls is model_config_lib.ModelConfig and (field.name
                                                  in _DERIVED_MODEL_FIELDS):
        continue
      _define_field(field, hints[field.name], flag_values)


def define_workdir_flag(flag_values=flags.FLAGS, required=True):
  flags.DEFINE_string(
      'workdir',
      None,
      'Run directory: checkpoints, config.json, metrics.jsonl, TensorBoard '
      'events and figures. Re-running with the same workdir resumes.',
      flag_values=flag_values,
      required=required)


def define_precision_flag(flag_values=flags.FLAGS):
  """``--precision`` and ``--attention_kernel`` of the tools that load a
  trained run (default: the run's own)."""
  flags.DEFINE_enum(
      'precision',
      None,
      list(model_config_lib.CHOICES['precision']),
      'What the conditioner networks compute in (see bin/train --helpfull); '
      "default the run's. The flow arithmetic is always in the run's --dtype.",
      flag_values=flag_values)
  flags.DEFINE_enum(
      'attention_kernel',
      None,
      list(model_config_lib.CHOICES['attention_kernel']),
      'How attention computes: fused (the fused CPU kernel), tensorflow or '
      "auto (see bin/train --helpfull); default the run's. The same "
      'function either way, to float rounding.',
      flag_values=flag_values)


def _values(cls, flag_values, **overrides):
  hints = typing.get_type_hints(cls)
  values = {}
  for field in dataclasses.fields(cls):
    if field.name in overrides:
      values[field.name] = overrides[field.name]
    elif field.name in flag_values:
      value = flag_values[field.name].value
      hint = hints[field.name]
      if hint is tuple or typing.get_origin(hint) is tuple:
        value = tuple(int(v) for v in value or ())
      values[field.name] = value
  return cls(**values)


def model_config(flag_values, image_shape, num_levels):
  return _values(
      model_config_lib.ModelConfig,
      flag_values,
      image_shape=tuple(image_shape),
      num_levels=num_levels)


def data_config(flag_values):
  return _values(data_lib.DataConfig, flag_values)


def train_config(flag_values):
  return _values(train_config_lib.TrainConfig, flag_values)


_FLAGFILE_PREFIXES = ('--flagfile=', '-flagfile=')


def _flagfile_args(path, including=()):
  """The flags of one flag file, its includes expanded in place."""
  if os.path.realpath(path) in map(os.path.realpath, including):
    raise flags.Error('circular --flagfile include: ' +
                      ' -> '.join((*including, path)))
  try:
    with open(path) as f:
      lines = f.readlines()
  except OSError as e:
    raise flags.CantOpenFlagFileError(
        f'Unable to open flagfile: {e}') from None
  args = []
  for line in lines:  # absl's flag file syntax.
    if line.isspace() or line.startswith(('#', '//')):
      continue
    if line.startswith(_FLAGFILE_PREFIXES):
      include = os.path.expanduser(line.split('=', 1)[1].strip())
      if include:
        args += _flagfile_args(
            os.path.join(os.path.dirname(path), include),
            (*including, path))
    else:
      args.append(line.strip())
  return args


def read_flagfiles(argv):
  """`argv` with each ``--flagfile=PATH`` replaced by the flags in the file.

  As absl's own flag file reading (a ``--flagfile`` on the command line is
  relative to the current directory; blank lines and lines starting with
  ``#`` or ``//`` are skipped; later flags win), except that a
  ``--flagfile=`` line inside a flag file is relative to that file, where
  absl would open it relative to the current directory.

  Args:
    argv: command-line arguments without the program name.

  Returns:
    The arguments with every flag file expanded.

  Raises:
    flags.Error: a flag file cannot be read or includes itself.
  """
  args, rest = [], list(argv)
  while rest:
    arg = rest.pop(0)
    if arg == '--':
      return args + [arg] + rest
    if arg in ('--flagfile', '-flagfile') and rest:
      path = rest.pop(0)
    elif arg.startswith(_FLAGFILE_PREFIXES):
      path = arg.split('=', 1)[1]
    else:
      args.append(arg)
      continue
    path = os.path.expanduser(path.strip())
    if path:
      args += _flagfile_args(path)
  return args


def parse_flags(argv, flag_values=flags.FLAGS):
  """``flag_values(argv)`` with flag files read by `read_flagfiles`."""
  return flag_values(argv[:1] + read_flagfiles(argv[1:]))


def parse_flags_or_exit(argv, flag_values=flags.FLAGS):
  """`parse_flags` that reports any error in one line and exits 2."""
  try:
    return parse_flags(argv, flag_values)
  except flags.Error as e:
    message = str(e).strip().splitlines()[0] if str(e).strip() else repr(e)
    prog = argv[0].rsplit('/', 1)[-1] if argv else 'flowpp'
    print(f'{prog}: error: {message}', file=sys.stderr)
    sys.exit(2)


def flags_parser(argv):
  """`absl.app.run` ``flags_parser`` hook using `parse_flags_or_exit`."""
  return parse_flags_or_exit(argv)
