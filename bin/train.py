#!/usr/bin/env python3
"""Trains a flow model: bin/train --flagfile=configs/NAME.flags --workdir=DIR.

Flags on the command line override the flagfile. Re-running the same command
resumes from the workdir's latest checkpoint. Every flag: --helpfull.
"""

import os
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
sys.path.insert(0,
                os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
from absl import logging

import flowpp_flags  # pylint: disable=g-bad-import-order

flowpp_flags.define_config_flags()
flowpp_flags.define_workdir_flag()
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
  if not FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)
  from tfp_flowpp import data as data_lib  # pylint: disable=g-import-not-at-top
  from tfp_flowpp import training  # pylint: disable=g-import-not-at-top
  try:
    data_config = flowpp_flags.data_config(FLAGS)
    train_config = flowpp_flags.train_config(FLAGS)
    # The image shape and levels come from the data; validate the rest now.
    model_config = flowpp_flags.model_config(FLAGS, (8, 8, 1), 17)
    training.train(model_config, data_config, train_config, FLAGS.workdir)
  except (ValueError, TypeError, data_lib.DataError, OSError,
          training.TrainingError) as e:
    print(f'train: error: {e}', file=sys.stderr)
    return 1
  except KeyboardInterrupt:
    return 130
  return 0


if __name__ == '__main__':
  app.run(main, flags_parser=flowpp_flags.flags_parser)
