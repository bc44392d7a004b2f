#!/usr/bin/env python3
"""Sampling robustness: non-finite and out-of-range samples, round trips.

    python bench/sampling.py --workdir=RUN [--tfb_glow_workdir=GLOW_RUN]
        # trained Fashion-MNIST runs (ours, and optionally TFP's tfb.Glow
        # trained by the library's Trainer); rewrites the sampling section
        # of docs/benchmarks.md
    python bench/sampling.py --quick
        # trains a tiny Flow++ and a tiny tfb.Glow on digits for a few steps
        # (smoke test; no doc unless --output_doc is given)

For each model (EMA weights) and temperature T, ``--num`` latents
z ~ N(0, T²I) are decoded with the continuous inverse flow
``y = decode_continuous(z)`` (before quantisation), in batches, and we report
the fraction of samples with any non-finite value in y, the fraction with a
finite value outside [0, L], and the round-trip error
``|encode_continuous(y) − z|`` (mean over the finite samples of the mean
per-dimension error, and its max). ``sample`` raises on a non-finite y
rather than return a pixel outside [0, L), so the first fraction is the
fraction of sample calls of that size that would fail.
"""

import json
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # pylint: disable=g-import-not-at-top,wrong-import-position

SCRIPT = os.path.abspath(__file__)
SECTION = 'sampling'
TEMPERATURES = (0.7, 0.9, 1.0, 1.2)
# TFP's tfb.Glow of bench/quality.py: 2 levels of K steps, hidden width
# matched to the Flow++ model's parameter count.
GLOW_BLOCKS = 2
GLOW_STEPS = 8


def _load(workdir, glow):
  """(model with EMA weights, step) of a workdir; ``glow``: tfb.Glow spec."""
  from tfp_flowpp import training  # pylint: disable=g-import-not-at-top
  model_fn = _common.tfb_glow_model_fn(glow) if glow else None
  model, _, step = training.restore_for_inference(workdir, model_fn=model_fn)
  return model, step


def _measure(model, temperature, num, batch, seed):
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  levels = float(model.num_levels)

  @tf.function
  def decode(i):
    z = model.sample_latents(
        batch, seed=tf.stack([seed, i]), temperature=temperature)
    y = model.decode_continuous(z)
    finite = tf.reduce_all(tf.math.is_finite(y), axis=[1, 2, 3])
    safe = tf.where(tf.math.is_finite(y), y, tf.zeros_like(y))
    outside = tf.reduce_any(
        tf.logical_or(safe < 0., safe > levels), axis=[1, 2, 3])
    # Round trip of the finite samples only (others would poison it).
    back = model.encode_continuous(tf.where(
        finite[:, None, None, None], y, tf.fill(tf.shape(y), levels / 2)))
    error = tf.reduce_mean(tf.abs(back - z), axis=[1, 2, 3])
    return finite, tf.logical_and(finite, outside), error

  finite, outside, error = [], [], []
  for i in range(-(-num // batch)):
    f, o, e = (t.numpy() for t in decode(tf.constant(i)))
    finite.append(f)
    outside.append(o)
    error.append(e)
  finite = np.concatenate(finite)[:num]
  outside = np.concatenate(outside)[:num]
  error = np.concatenate(error)[:num][finite]
  error = error[np.isfinite(error)]
  return {
      'temperature': temperature,
      'num': num,
      'non_finite': float(1. - finite.mean()),
      'outside': float(outside.mean()),
      'round_trip_mean': float(error.mean()) if error.size else None,
      'round_trip_max': float(error.max()) if error.size else None,
  }


def worker_main(spec):
  results = []
  for entry in spec['models']:
    model, step = _load(entry['workdir'], entry.get('glow'))
    rows = [
        _measure(model, t, spec['num'], spec['batch'], spec['seed'])
        for t in spec['temperatures']
    ]
    results.append({'label': entry['label'], 'step': step, 'rows': rows,
                    'num_levels': model.num_levels,
                    'image_shape': list(model.image_shape)})
  _common.emit_result({'models': results})


def _train_quick(root):
  """A tiny Flow++ and a tiny tfb.Glow on digits (a few steps each)."""
  import io  # pylint: disable=g-import-not-at-top
  from tfp_flowpp import training  # pylint: disable=g-import-not-at-top
  overrides = ['--train_steps=10', '--eval_every=10', '--checkpoint_every=10',
               '--num_sample_images=0', '--test_num_samples=1',
               '--max_eval_images=64']
  model_config, data_config, train_config = _common.configs(
      'tiny', overrides=overrides)
  glow = {'num_blocks': 1, 'steps': 2, 'hidden': 8}
  paths = {}
  for name, model_fn in (('flowpp', None),
                         ('tfb_glow', _common.tfb_glow_model_fn(glow))):
    paths[name] = os.path.join(root, name)
    training.Trainer(model_config, data_config, train_config, paths[name],
                     stream=io.StringIO(), model_fn=model_fn).run()
  return paths['flowpp'], paths['tfb_glow'], glow


def _glow_spec(workdir, steps):
  """tfb.Glow matched to the parameter count of the Flow++ run's config."""
  from tfp_flowpp import model_builder  # pylint: disable=g-import-not-at-top
  from tfp_flowpp import training  # pylint: disable=g-import-not-at-top
  model_config = training.Workdir(workdir).model_config()
  target = model_builder.count_parameters(
      model_builder.build_model(model_config))
  hidden, _ = _common.match_tfb_glow(target, model_config.image_shape,
                                     GLOW_BLOCKS, steps)
  return {'num_blocks': GLOW_BLOCKS, 'steps': steps, 'hidden': hidden}


def run(args):
  load, busy = _common.wait_for_quiet(timeout=args.wait_for_quiet)
  env = _common.environment(load, busy)
  scratch = None
  if args.quick:
    scratch = tempfile.mkdtemp(prefix='bench_sampling_')
    workdir, glow_workdir, glow = _train_quick(scratch)
    num, batch = 64, 32
  else:
    if not args.workdir:
      raise SystemExit('sampling.py: --workdir is required (or --quick).')
    workdir, glow_workdir = args.workdir, args.tfb_glow_workdir
    glow = None
    if glow_workdir:
      glow = (json.loads(args.tfb_glow_spec) if args.tfb_glow_spec else
              _glow_spec(workdir, GLOW_STEPS))
    num, batch = args.num, args.batch
  models = [{'label': 'ours (Flow++)', 'workdir': workdir}]
  if glow_workdir:
    models.append({'label': 'tfb.Glow', 'workdir': glow_workdir, 'glow': glow})
  spec = {
      'models': models,
      'temperatures': list(TEMPERATURES), 'num': num, 'batch': batch,
      'seed': args.seed,
  }
  started = time.time()
  result = _common.run_worker(SCRIPT, spec, timeout=14400)
  if scratch:
    shutil.rmtree(scratch, ignore_errors=True)
  headers = ['model', 'T', 'samples', 'non-finite y', 'y outside [0, L]',
             'round trip |Δz| mean', 'round trip |Δz| max']
  rows = []
  for model in result['models']:
    for r in model['rows']:
      rows.append([
          f"{model['label']} (step {model['step']:,})", r['temperature'],
          f"{r['num']:,}", f"{r['non_finite']:.1%}", f"{r['outside']:.1%}",
          _common.fmt(r['round_trip_mean']), _common.fmt(r['round_trip_max'])
      ])
  print(_common.text_table(headers, rows))
  print(f'({time.time() - started:.0f}s)')
  doc = _common.output_doc(args)
  if doc:
    levels = result['models'][0]['num_levels']
    shape = 'x'.join(map(str, result['models'][0]['image_shape']))
    _common.write_section(doc, SECTION, [
        '## Sampling robustness', '',
        f'{num:,} samples per temperature from each trained model ({shape}, '
        f'L = {levels}; EMA weights). *non-finite y*: samples with a NaN or '
        'Inf anywhere in `decode_continuous(z)` (`sample` raises on those '
        'instead of returning pixels outside [0, L)); *y outside [0, L]*: '
        'finite samples with a value outside the pixel range before '
        'quantisation (clipped by `quantize`); *round trip*: mean absolute '
        '`encode_continuous(decode_continuous(z)) − z` per dimension over '
        'the finite samples. ' + (
            'tfb.Glow is TFP\'s, trained on the same data by the library\'s '
            '`Trainer` (`--tfb_glow_workdir`). ' if glow_workdir else
            'No tfb.Glow run was given (`--tfb_glow_workdir`), so this run '
            'has no tfb.Glow rows. ') + 'Target: 0% non-finite at every '
        'T ≤ 1.2.', '',
        _common.markdown_table(headers, rows), '',
    ], env, _common.reproduce_command(
        'sampling.py', sys.argv,
        ('--output_doc', '--workdir', '--tfb_glow_workdir')))


def main(argv):
  if _common.run_as_worker(argv, worker_main):
    return
  parser = _common.base_parser(__doc__.splitlines()[0], SECTION,
                               'train tiny models on digits; no doc')
  parser.add_argument('--workdir', help='Trained Flow++ run (bin/train).')
  parser.add_argument('--tfb_glow_workdir',
                      help='tfb.Glow run trained by the library\'s Trainer.')
  parser.add_argument('--tfb_glow_spec', default=None,
                      help='JSON {"num_blocks", "steps", "hidden"} of the '
                      'tfb.Glow run; default bench/quality.py\'s (2 levels '
                      f'of {GLOW_STEPS} steps, width matched to --workdir).')
  parser.add_argument('--num', type=int, default=1000,
                      help='Samples per temperature.')
  parser.add_argument('--batch', type=int, default=100,
                      help='Samples per decode call.')
  parser.add_argument('--seed', type=int, default=0)
  run(parser.parse_args(argv[1:]))


if __name__ == '__main__':
  main(sys.argv)
