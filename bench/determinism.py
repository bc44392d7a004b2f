#!/usr/bin/env python3
"""What ``--deterministic`` costs and buys: train-step time and replay drift.

    python bench/determinism.py           # tiny + quickstart, rewrites the
                                          # determinism section of
                                          # docs/benchmarks.md
    python bench/determinism.py --quick   # tiny only, no doc

For each config and mode (default / ``--deterministic``) a fresh process
(determinism is process-global) builds the library's `Trainer` on the
config's real data, initialises it, and

* replays: trains K steps, restores every variable (model, Adam moments,
  EMA copies, counters) to the state before them and trains the same K
  steps again, then counts the tensors that differ and their max |Δ|;
* times the train step (median seconds per step, after one traced call).
"""

import io
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # pylint: disable=g-import-not-at-top,wrong-import-position

SCRIPT = os.path.abspath(__file__)
SECTION = 'determinism'
FULL_CONFIGS = ('tiny', 'quickstart')
QUICK_CONFIGS = ('tiny',)


def worker_main(spec):
  overrides = ['--deterministic'] if spec['deterministic'] else []
  model_config, data_config, train_config = _common.configs(
      spec['config'], overrides=overrides)
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tfp_flowpp import training  # pylint: disable=g-import-not-at-top
  workdir = tempfile.mkdtemp(prefix='bench_determinism_')
  trainer = training.Trainer(model_config, data_config, train_config,
                             workdir, stream=io.StringIO())
  trainer.restore_or_initialize()
  state = (list(trainer.model.variables) + list(trainer.optimizer.variables) +
           [trainer.step, trainer.skipped, trainer.consecutive_skips])
  before = [v.numpy() for v in state]
  batches = [
      b for _, b in zip(
          range(spec['steps']),
          trainer.dataset.train_batches(train_config.batch_size))
  ]

  def replay():
    for v, value in zip(state, before):
      v.assign(value)
    for i, batch in enumerate(batches):
      trainer.train_step(batch, tf.constant(i, tf.int64))
    return [v.numpy() for v in state]

  first, second = replay(), replay()
  drift = [
      float(np.max(np.abs(a.astype(np.float64) - b), initial=0.))
      for a, b in zip(first, second)
  ]
  steps = iter(range(10**6))
  timing = _common.time_calls(
      lambda: trainer.train_step(batches[0], tf.constant(
          next(steps), tf.int64))[0].numpy(),
      min_seconds=spec['min_seconds'])
  shutil.rmtree(workdir, ignore_errors=True)
  _common.emit_result({
      'config': spec['config'],
      'deterministic': spec['deterministic'],
      'tensors': len(state),
      'differing': sum(d > 0 for d in drift),
      'max_drift': max(drift),
      'step_seconds': timing['median'],
      'calls': timing['calls'],
      'batch_size': train_config.batch_size,
      'inter_op_threads': tf.config.threading.get_inter_op_parallelism_threads(),
  })


def run(args):
  load, busy = _common.wait_for_quiet(timeout=args.wait_for_quiet)
  env = _common.environment(load, busy)
  configs = QUICK_CONFIGS if args.quick else FULL_CONFIGS
  steps = 2 if args.quick else args.steps
  min_seconds = 0.5 if args.quick else args.min_seconds
  rows, started = [], time.time()
  for config in configs:
    results = {}
    for deterministic in (False, True):
      results[deterministic] = _common.run_worker(
          SCRIPT, {'config': config, 'deterministic': deterministic,
                   'steps': steps, 'min_seconds': min_seconds})
      r = results[deterministic]
      print(f"[{time.time() - started:5.0f}s] {config} deterministic="
            f"{deterministic}: {r['differing']}/{r['tensors']} tensors "
            f"differ on replay (max {r['max_drift']:.3g}), "
            f"{r['step_seconds'] * 1e3:.0f} ms/step", flush=True)
    cost = results[True]['step_seconds'] / results[False]['step_seconds'] - 1
    for deterministic in (False, True):
      r = results[deterministic]
      rows.append([
          f"{config} (batch {r['batch_size']})",
          '--deterministic' if deterministic else 'default',
          f"{r['differing']:,} of {r['tensors']:,}",
          _common.fmt(r['max_drift']) if r['max_drift'] else '0',
          f"{r['step_seconds'] * 1e3:.0f}",
          f'{cost:+.0%}' if deterministic else '',
      ])
  headers = ['config', 'mode', f'tensors changed by a {steps}-step replay',
             'max abs change', 'ms/step (median)', 'step time vs default']
  print(_common.text_table(headers, rows))
  doc = _common.output_doc(args)
  if doc:
    _common.write_section(doc, SECTION, [
        '## Determinism (`--deterministic`)', '',
        f'Each row: a fresh process trains {steps} steps, restores every '
        'variable (weights, ActNorm state, Adam moments, EMA copies, '
        'counters) and trains the same steps again. `--deterministic` '
        '(op determinism, one inter-op thread, a global seed; see '
        '[reproducibility](reproducibility.md)) makes the replay '
        'bit-identical; the cost is the step time.', '',
        _common.markdown_table(headers, rows), '',
    ], env, _common.reproduce_command('determinism.py', sys.argv))


def main(argv):
  if _common.run_as_worker(argv, worker_main):
    return
  parser = _common.base_parser(__doc__.splitlines()[0], SECTION,
                               'tiny config only, no doc')
  parser.add_argument('--steps', type=int, default=5,
                      help='Steps replayed twice.')
  parser.add_argument('--min_seconds', type=float, default=10.,
                      help='Timing budget per mode.')
  run(parser.parse_args(argv[1:]))


if __name__ == '__main__':
  main(sys.argv)
