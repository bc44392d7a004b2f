"""Shared plumbing of the bin/ tools (not a flag module)."""

import os
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
sys.path.insert(0,
                os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
from absl import logging

import flowpp_flags  # pylint: disable=g-bad-import-order


def run(main, name):
  """absl ``app.run`` with one-line errors for bad flags and bad input.

  ``main()`` runs after flag parsing. Exit codes: 0 on success, 1 with one
  ``NAME: error: ...`` line on stderr for bad input, 2 for bad flags (see
  `flowpp_flags.parse_flags_or_exit`), 130 on Ctrl-C.
  """

  def wrapped(argv):
    if len(argv) > 1:
      raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
    if not flags.FLAGS['verbosity'].present:
      logging.set_verbosity(logging.WARNING)
    from tfp_flowpp import data as data_lib  # pylint: disable=g-import-not-at-top
    from tfp_flowpp import training  # pylint: disable=g-import-not-at-top
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    try:
      return main() or 0
    except (ValueError, TypeError, OSError, data_lib.DataError,
            training.TrainingError, tf.errors.InvalidArgumentError) as e:
      lines = [line.strip() for line in str(e).strip().splitlines()
               if line.strip()]
      # An error raised inside a tf.function reads "in user code:", then the
      # traceback, then the error itself: report the error.
      message = (lines[-1] if lines and lines[0] == 'in user code:' else
                 lines[0] if lines else repr(e))
      print(f'{name}: error: {message}', file=sys.stderr)
      return 1
    except KeyboardInterrupt:
      return 130

  app.run(wrapped, flags_parser=flowpp_flags.flags_parser)


def load(workdir):
  """(model with EMA weights, configs dict, step) from a training workdir.

  The networks compute in ``--precision``, and attention with
  ``--attention_kernel``, where the tool defines them (else, or if unset, as
  the run did).
  """
  from tfp_flowpp import training  # pylint: disable=g-import-not-at-top
  overrides = {
      name: flags.FLAGS[name].value
      for name in ('precision', 'attention_kernel')
      if name in flags.FLAGS
  }
  return training.restore_for_inference(workdir, **overrides)


def dataset(configs):
  from tfp_flowpp import data as data_lib  # pylint: disable=g-import-not-at-top
  return data_lib.load_dataset(data_lib.DataConfig(**configs['data']))


def class_indices(configs, values):
  """Model class indices of data set labels or class names (strings).

  A class-conditional model's classes are 0..K-1; config.json records the
  data set label (``class_labels``) and name (``class_names``) of each. A
  value is matched as a data set label first, then as a name.
  """
  model = configs['model']
  if model.get('conditioning', 'none') != 'class':
    raise ValueError('this model is not class-conditional; drop --label/'
                     '--labels.')
  labels = [int(v) for v in model.get('class_labels') or
            range(model['num_classes'])]
  names = [str(n) for n in model.get('class_names') or ()]
  out = []
  for value in values:
    value = value.strip()
    if value.lstrip('-').isdigit() and int(value) in labels:
      out.append(labels.index(int(value)))
    elif value in names:
      out.append(names.index(value))
    else:
      known = ', '.join(f'{l} ({n})' for l, n in zip(labels, names)) if (
          names) else ', '.join(map(str, labels))
      raise ValueError(f'unknown class {value!r}; this model\'s classes '
                       f'(data set label (name)) are: {known}.')
  return out
