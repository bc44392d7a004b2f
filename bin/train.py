#!/usr/bin/env python3
"""Trains a flow model: bin/train --flagfile=configs/NAME.flags --workdir=DIR.

Flags on the command line override the flagfile. Re-running the same command
resumes from the workdir's latest checkpoint. Every flag: --helpfull.
"""

from absl import flags

import _tool  # pylint: disable=g-bad-import-order
import flowpp_flags

flowpp_flags.define_config_flags()
flowpp_flags.define_workdir_flag()
FLAGS = flags.FLAGS


def main():
  from tfp_flowpp import training  # pylint: disable=g-import-not-at-top
  data_config = flowpp_flags.data_config(FLAGS)
  train_config = flowpp_flags.train_config(FLAGS)
  # The image shape and levels come from the data; validate the rest now.
  model_config = flowpp_flags.model_config(FLAGS, (8, 8, 1), 17)
  training.train(model_config, data_config, train_config, FLAGS.workdir)


if __name__ == '__main__':
  _tool.run(main, 'train')
