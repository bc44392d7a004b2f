#!/usr/bin/env python3
"""Where the time of a SavedModel export goes: tracing, saving, loading.

    python bench/export.py           # CIFAR-10 paper config, Fashion-MNIST
                                     # and quickstart; rewrites the export
                                     # section of docs/benchmarks.md
    python bench/export.py --quick   # tiny config only, no doc

For each config a fresh process builds the model (initialised on random
images: export cost does not depend on the weights' values) and then:

* traces the serving module (`export.make_serving_module`), timing each
  `tf.function`'s ``get_concrete_function`` on its own;
* saves it with `tf.saved_model.save` as `export.export_saved_model` does
  (custom gradients saved: ``flow_log_prob``'s frozen gradient needs them),
  and once more without custom gradients for comparison, recording the time
  and the size of the graph (``saved_model.pb``) and of the variables;
* loads the saved model back (`tf.saved_model.load`) and times it.
"""

import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # pylint: disable=g-import-not-at-top,wrong-import-position

SCRIPT = os.path.abspath(__file__)
SECTION = 'export'
# config name -> (image shape, levels)
FULL_CONFIGS = {
    'cifar10_flowpp': ((32, 32, 3), 256),
    'fashion_mnist_flowpp': ((28, 28, 1), 256),
    'quickstart': ((8, 8, 1), 17),
}
QUICK_CONFIGS = {'tiny': ((8, 8, 1), 17)}


def _dir_bytes(path):
  return sum(
      os.path.getsize(os.path.join(root, name))
      for root, _, names in os.walk(path) for name in names)


def worker_main(spec):
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tensorflow.python.eager.polymorphic_function import polymorphic_function  # pylint: disable=g-import-not-at-top,g-direct-tensorflow-import
  from tfp_flowpp import export  # pylint: disable=g-import-not-at-top
  from tfp_flowpp import model_builder  # pylint: disable=g-import-not-at-top
  shape, levels = spec['image_shape'], spec['levels']
  model_config, _, _ = _common.configs(spec['config'], tuple(shape), levels)
  started = time.perf_counter()
  model = model_builder.build_model(model_config)
  images = np.random.default_rng(0).integers(0, levels, [16] + list(shape))
  model.initialize(images.astype(np.int32), seed=[0, 0])
  build_seconds = time.perf_counter() - started

  traces = []  # (function name, seconds), outermost calls only.
  depth = [0]
  original = polymorphic_function.Function.get_concrete_function

  def timed(self, *args, **kwargs):
    depth[0] += 1
    t = time.perf_counter()
    try:
      return original(self, *args, **kwargs)
    finally:
      depth[0] -= 1
      if depth[0] == 0:
        traces.append((self.name, time.perf_counter() - t))

  polymorphic_function.Function.get_concrete_function = timed
  t = time.perf_counter()
  module, signatures = export.make_serving_module(model)
  trace_seconds = time.perf_counter() - t
  polymorphic_function.Function.get_concrete_function = original

  root = tempfile.mkdtemp(prefix='bench_export_')
  saves = {}
  for name, options in (('custom gradients (as exported)',
                         tf.saved_model.SaveOptions(
                             experimental_custom_gradients=True)),
                        ('no custom gradients',
                         tf.saved_model.SaveOptions(
                             experimental_custom_gradients=False))):
    path = os.path.join(root, str(len(saves)))
    t = time.perf_counter()
    tf.saved_model.save(module, path, signatures=signatures, options=options)
    seconds = time.perf_counter() - t
    saves[name] = {
        'seconds': seconds,
        'graph_bytes': os.path.getsize(os.path.join(path, 'saved_model.pb')),
        'variables_bytes': _dir_bytes(os.path.join(path, 'variables')),
        'total_bytes': _dir_bytes(path),
    }
  t = time.perf_counter()
  loaded = tf.saved_model.load(os.path.join(root, '0'))
  load_seconds = time.perf_counter() - t
  del loaded
  shutil.rmtree(root, ignore_errors=True)
  _common.emit_result({
      'config': spec['config'],
      'parameters': int(sum(np.prod(v.shape) for v in model.variables)),
      'build_seconds': build_seconds,
      'trace_seconds': trace_seconds,
      'traces': traces,
      'saves': saves,
      'load_seconds': load_seconds,
      'peak_rss_mib': _common.peak_rss_mib(),
  })


def run(args):
  load, busy = _common.wait_for_quiet(timeout=args.wait_for_quiet)
  env = _common.environment(load, busy)
  configs = QUICK_CONFIGS if args.quick else FULL_CONFIGS
  if args.configs:
    names = args.configs.split(',')
    unknown = sorted(set(names) - set(FULL_CONFIGS) - set(QUICK_CONFIGS))
    if unknown:
      raise SystemExit(f'--configs: unknown {unknown}; known: '
                       f'{sorted({**FULL_CONFIGS, **QUICK_CONFIGS})}')
    configs = {n: {**FULL_CONFIGS, **QUICK_CONFIGS}[n] for n in names}
  started = time.time()
  results = []
  for config, (shape, levels) in configs.items():
    r = _common.run_worker(SCRIPT, {
        'config': config, 'image_shape': shape, 'levels': levels},
                           timeout=4 * 3600)
    results.append(r)
    saved = r['saves']['custom gradients (as exported)']
    print(f"[{time.time() - started:5.0f}s] {config}: trace "
          f"{r['trace_seconds']:.0f} s, save {saved['seconds']:.0f} s "
          f"({saved['total_bytes'] / 2**20:.0f} MiB), load "
          f"{r['load_seconds']:.0f} s", flush=True)
  summary_headers = [
      'config', 'params', 'trace s', 'save s', 'export s', 'load s',
      'graph MiB', 'variables MiB', 'without custom gradients: save s / '
      'graph MiB', 'peak RSS MiB'
  ]
  summary = []
  trace_headers = ['config', 'function', 'trace s', 'share of tracing']
  trace_rows = []
  for r in results:
    saved = r['saves']['custom gradients (as exported)']
    plain = r['saves']['no custom gradients']
    summary.append([
        r['config'], f"{r['parameters']:,}", f"{r['trace_seconds']:.1f}",
        f"{saved['seconds']:.1f}",
        f"{r['trace_seconds'] + saved['seconds']:.1f}",
        f"{r['load_seconds']:.1f}", f"{saved['graph_bytes'] / 2**20:.1f}",
        f"{saved['variables_bytes'] / 2**20:.1f}",
        f"{plain['seconds']:.1f} / {plain['graph_bytes'] / 2**20:.1f}",
        f"{r['peak_rss_mib']:.0f}"
    ])
    for name, seconds in sorted(r['traces'], key=lambda x: -x[1]):
      trace_rows.append([
          r['config'], f'`{name}`', f'{seconds:.1f}',
          f"{seconds / max(r['trace_seconds'], 1e-9):.0%}"
      ])
  print(_common.text_table(summary_headers, summary))
  print(_common.text_table(trace_headers, trace_rows))
  doc = _common.output_doc(args)
  if doc:
    _common.write_section(doc, SECTION, [
        '## SavedModel export: where the time goes', '',
        'Each config in a fresh process: the model is built and initialised '
        'on random images, then `export.make_serving_module` traces every '
        'serving function (timed one by one), `tf.saved_model.save` writes '
        'it as `bin/export` does (with custom gradients, which '
        '`flow_log_prob` needs) and once more without them for comparison, '
        'and `tf.saved_model.load` reads it back. "export s" = trace + save, '
        'what `bin/export` spends after restoring the checkpoint.', '',
        _common.markdown_table(summary_headers, summary), '',
        'Tracing, per function (each `get_concrete_function`, outermost '
        'calls only; `to_uint8_images` is the inverse flow shared by '
        '`sample` and `decode`):', '',
        _common.markdown_table(trace_headers, trace_rows), '',
    ], env, _common.reproduce_command('export.py', sys.argv))


def main(argv):
  if _common.run_as_worker(argv, worker_main):
    return
  parser = _common.base_parser(__doc__.splitlines()[0], SECTION,
                               'tiny config only, no doc')
  parser.add_argument('--configs', default=None,
                      help='Comma-separated subset of ' +
                      ','.join(list(FULL_CONFIGS) + list(QUICK_CONFIGS)))
  run(parser.parse_args(argv[1:]))


if __name__ == '__main__':
  main(sys.argv)
