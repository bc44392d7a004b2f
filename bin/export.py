#!/usr/bin/env python3
"""Exports a trained model for TF Serving: bin/export --workdir=DIR.

Writes ``--export_dir`` (default ``DIR/export``) ``/VERSION/``: a SavedModel
with the EMA weights of the latest checkpoint and the signatures
serving_default (= log_prob), importance_weighted_log_prob, sample, encode and
decode. ``--precision`` chooses what its networks compute in (default the
run's); the interface stays uint8/float32 and the flow arithmetic in the
run's --dtype. VERSION defaults to the next free integer; an existing version is
never overwritten, and a failed export leaves no directory behind. Serve it
with ``tensorflow_model_server --model_base_path=EXPORT_DIR``; see
docs/serving.md.
"""

import os
import time

from absl import flags

import _tool  # pylint: disable=g-bad-import-order
import flowpp_flags

flowpp_flags.define_workdir_flag()
flowpp_flags.define_precision_flag()
flags.DEFINE_string(
    'export_dir', None,
    'Model base path for TF Serving (version directories go inside); '
    'default WORKDIR/export.')
flags.DEFINE_integer(
    'version', None, 'Version number (directory name) to write; default the '
    'next free integer. Existing versions are never overwritten.',
    lower_bound=1)
FLAGS = flags.FLAGS


def main():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tfp_flowpp import export  # pylint: disable=g-import-not-at-top
  if not FLAGS['verbosity'].present:
    tf.get_logger().setLevel('ERROR')  # e.g. unrestored optimizer slots.
  workdir = os.path.abspath(FLAGS.workdir)
  export_dir = os.path.abspath(FLAGS.export_dir or
                               os.path.join(workdir, 'export'))
  # Fail fast, before restoring, on a version that cannot be written.
  version = export.resolve_version(export_dir, FLAGS.version)
  model, configs, step = _tool.load(workdir)
  started = time.time()
  path = export.export_saved_model(
      model, export_dir, version=version,
      metadata={'config': configs, 'step': step, 'workdir': workdir,
                'class_labels': configs['model'].get('class_labels') or None,
                'class_names': configs['model'].get('class_names') or None})
  print(f'Exported step {step} of {workdir} to {path} '
        f'({time.time() - started:.1f}s; networks in '
        f'{export.read_metadata(path)["precision"]}).')


if __name__ == '__main__':
  _tool.run(main, 'export')
