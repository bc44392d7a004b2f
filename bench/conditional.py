#!/usr/bin/env python3
"""Class-conditional Flow++ p(x | y) against the unconditional model.

    python bench/conditional.py                        # digits, rewrites the
                                                       # conditional section
                                                       # of docs/benchmarks.md
    python bench/conditional.py --dataset=fashion_mnist --steps=2000
    python bench/conditional.py --quick                # smoke run (< 2 min)

For each variant — unconditional, label embedding only (coupling networks
and dequantizer), class-conditional prior only, both — the library's
`Trainer` trains the dataset's config (``configs/quickstart.flags`` for the
digits, ``configs/fashion_mnist_flowpp.flags`` for Fashion-MNIST) in its own
process, in two regimes: the same number of steps, and the same training
CPU time (``max_cpu_seconds`` = the CPU seconds the unconditional model took
for those steps, so the unconditional model's equal-CPU row is that same
run). Each run is scored with its EMA weights on the test split:
the importance-weighted bound (k = ``--iw_samples``; class-conditional
bits/dim for the conditional models, i.e. log P(x | y) with the true label)
and the Bayes-classifier accuracy of argmax_y P(x | y) π_y. The Trainer's
final sample grid (one row per class, temperature from the config) is
copied to ``docs/figures/conditional_samples_<dataset>_<variant>.png``.
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

# (key, label, ModelConfig overrides)
VARIANTS = (
    ('none', 'unconditional', ('--conditioning=none',)),
    ('embedding', 'label embedding only',
     ('--conditioning=class', '--noclass_prior')),
    ('prior', 'class prior only',
     ('--conditioning=class', '--noclass_context', '--noclass_dequantizer')),
    ('both', 'embedding + class prior (default)', ('--conditioning=class',)),
)
CONFIGS = {'digits': 'quickstart', 'fashion_mnist': 'fashion_mnist_flowpp'}
QUICK_OVERRIDES = ('--filters=8', '--blocks=1', '--components=2',
                   '--dequantizer_filters=8', '--heads=2',
                   '--context_channels=4', '--flow=stripe:1 squeeze channel:1',
                   '--dequantizer_flow=stripe:1', '--init_batch_size=64',
                   '--num_sample_images=20')

# Worker side --------------------------------------------------------------------


def worker_main(spec):
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tfp_flowpp import data as data_lib  # pylint: disable=g-import-not-at-top
  from tfp_flowpp import model_builder  # pylint: disable=g-import-not-at-top
  from tfp_flowpp import training  # pylint: disable=g-import-not-at-top
  model_config, data_config, train_config = _common.configs(
      spec['config'], overrides=spec['overrides'])
  dataset = data_lib.load_dataset(data_config)
  workdir = spec['workdir']
  shutil.rmtree(workdir, ignore_errors=True)
  started = time.time()
  trainer = training.Trainer(model_config, data_config, train_config, workdir,
                             dataset=dataset, stream=sys.stderr)
  final = trainer.run()
  model = trainer.model
  conditional = trainer.conditional
  evaluator = training.BpdEvaluator(model, seed=4242)
  result = {
      'parameters': model_builder.count_parameters(model),
      'steps': final['step'],
      'cpu_seconds': final['cpu_seconds'],
      'train_elapsed': final['elapsed_sec'],
      'wall_seconds': time.time() - started,
      'test_bpd_single': final['test_bpd'],
  }
  with training.ema_weights(model, trainer.optimizer):
    iw = evaluator.evaluate(
        dataset.eval_batches('test', spec['iw_batch'],
                             with_labels=conditional),
        num_samples=spec['iw_samples'], max_images=spec['test_images'])
    result.update(iw_bpd=iw['bpd'], iw_images=iw['num_images'])
    if conditional:
      classify = tf.function(lambda x, seed: model.class_log_likelihoods(
          x, num_samples=spec['classifier_samples'], seed=seed))
      correct = total = 0
      confusion = np.zeros([model.num_classes] * 2, np.int64)
      batches = dataset.eval_batches('test', spec['iw_batch'],
                                     with_labels=True)
      for i, (x, y) in enumerate(batches.unbatch().take(
          spec['test_images']).batch(spec['iw_batch'])):
        log_likelihoods = classify(x, tf.constant([7, i]))
        predicted = np.argmax(
            log_likelihoods + model.log_class_frequencies, axis=-1)
        correct += int(np.sum(predicted == y.numpy()))
        total += len(predicted)
        np.add.at(confusion, (y.numpy(), predicted), 1)
      result.update(accuracy=correct / total, classified=total,
                    confusion=confusion.tolist())
  samples = os.path.join(workdir, 'figures', 'samples_latest.png')
  result['samples'] = samples if os.path.exists(samples) else None
  result['class_names'] = list(dataset.model_class_names)
  result['histogram_bpd'] = trainer.baseline_bpd
  _common.emit_result(result)


# Driver ---------------------------------------------------------------------------


def _overrides(args, variant, regime, cpu_seconds=None):
  out = list(variant) + [
      f'--dataset={args.dataset}',
      '--checkpoint_every=100000000',
      f'--test_num_samples=1',
  ]
  if regime == 'steps':
    out.append(f'--train_steps={args.steps}')
  else:
    out += [f'--max_cpu_seconds={cpu_seconds}', '--train_steps=100000000']
  if args.quick:
    out += list(QUICK_OVERRIDES) + ['--eval_every=5', '--log_every=5']
  return out


def run(args):
  load, busy = _common.wait_for_quiet(timeout=args.wait_for_quiet)
  env = _common.environment(load, busy)
  started = time.time()
  workroot = args.workdir or tempfile.mkdtemp(prefix='bench_conditional_')
  keys = args.variants.split(',')
  variants = [v for v in VARIANTS if v[0] in keys]
  regimes = args.regimes.split(',')
  common = dict(config=CONFIGS[args.dataset], iw_samples=args.iw_samples,
                iw_batch=args.iw_batch, test_images=args.test_images,
                classifier_samples=args.classifier_samples)
  results = {'env': env, 'runs': {}, 'labels': {k: l for k, l, _ in variants}}

  def log(text):
    print(f'[{time.time() - started:6.0f}s] {text}', flush=True)

  budget = None
  for regime in regimes:
    for key, _, variant in variants:
      if regime == 'cpu' and budget is None:
        raise ValueError('--regimes=cpu needs the steps regime first (its '
                         'unconditional run sets the CPU budget).')
      if regime == 'cpu' and key == variants[0][0]:
        # The budget is this variant's own equal-steps CPU time: training it
        # again to that budget would repeat the same run.
        results['runs'][f'cpu/{key}'] = dict(
            results['runs'][f'steps/{key}'], same_as_steps=True)
        continue
      spec = dict(common, overrides=_overrides(args, variant, regime, budget),
                  workdir=os.path.join(workroot, f'{regime}_{key}'))
      r = _common.run_worker(SCRIPT, spec, timeout=6 * 3600)
      results['runs'][f'{regime}/{key}'] = r
      with open(os.path.join(workroot, 'partial_results.json'), 'w') as f:
        json.dump(results, f, indent=1, default=str)  # Survives a kill.
      if regime == 'steps' and key == variants[0][0]:
        budget = r['cpu_seconds']
      log(f"{regime}/{key}: {r['steps']} steps, {r['cpu_seconds']:.0f} CPU-s, "
          f"IW test bpd {r['iw_bpd']:.4f}"
          + (f", accuracy {r['accuracy']:.3f}" if 'accuracy' in r else ''))
  results['cpu_budget'] = budget
  results['seconds'] = time.time() - started
  results['load_after'] = _common.load_average()
  results['workroot'] = workroot
  return results


# Report ---------------------------------------------------------------------------


def report(results, command, args, figures_dir, doc_path):
  labels = results['labels']
  runs = results['runs']
  dataset = args.dataset
  rows = []
  for name, r in runs.items():
    regime, key = name.split('/')
    reference = runs.get(f'{regime}/none')
    delta = ('' if reference is None or key == 'none' else
             f"{r['iw_bpd'] - reference['iw_bpd']:+.4f}")
    rows.append([
        labels[key], 'equal steps' if regime == 'steps' else
        ('equal CPU (= its equal-steps run)' if r.get('same_as_steps') else
         'equal CPU'),
        f"{r['parameters']:,}", f"{r['steps']:,}", f"{r['cpu_seconds']:.0f}",
        f"{r['iw_bpd']:.4f}", delta,
        f"{r['accuracy']:.3f}" if 'accuracy' in r else '–'
    ])
  headers = ['model', 'regime', 'params', 'steps', 'train CPU s',
             f'test bpd, IW k={args.iw_samples}', 'Δ vs unconditional',
             'Bayes-classifier test accuracy']
  os.makedirs(figures_dir, exist_ok=True)
  figures = []
  for name, r in runs.items():
    regime, key = name.split('/')
    if regime == 'steps' and r.get('samples'):
      dest = os.path.join(figures_dir,
                          f'conditional_samples_{dataset}_{key}.png')
      shutil.copyfile(r['samples'], dest)
      figures.append((labels[key], dest))
  some = next(iter(runs.values()))
  md = [f'## Class-conditional Flow++: {dataset}', '']
  md += _common.environment_lines(results['env'], command,
                                  results.get('load_after'))
  regimes = {name.split('/')[0] for name in runs}
  text = (f"* Config `configs/{CONFIGS[dataset]}.flags`; equal steps = "
          f'{args.steps} steps each (the table gives each run\'s training CPU '
          'seconds: process user + system, evaluations excluded)')
  if 'cpu' in regimes:
    text += (f"; equal CPU = each variant trained for the "
             f"{results['cpu_budget'] or 0:.0f} training CPU seconds the "
             'unconditional model used for those steps')
  else:
    text += '; the equal-CPU regime (`--regimes=cpu`) was not run'
  text += '. Each run in its own process.'
  if results.get('seconds'):
    text += f" Whole bench: {results['seconds'] / 60:.0f} min wall."
  md.append(text)
  md.append(
      f'* Test bpd: importance-weighted bound, k = {args.iw_samples}, EMA '
      f"weights, on {some['iw_images']:,} test images; for the conditional "
      'models it is the class-conditional bound on log P(x | y) with the true '
      'label. Bayes classifier: argmax_y of the bound on log P(x | y) '
      f'(k = {args.classifier_samples}, the same noise for every class) plus '
      'log π_y (training class frequencies). A generative classifier is '
      'expected to be far below a discriminative one; it is reported, not '
      'tuned for.')
  if some.get('histogram_bpd'):
    md.append(f"* Per-pixel histogram baseline on the same test split: "
              f"{some['histogram_bpd']:.4f} bpd.")
  md.append('')
  md.append(_common.markdown_table(headers, rows))
  md.append('')
  md.append('For ideal models the gain of conditioning is the mutual '
            'information I(x; y) ≤ log2(K) bits per image (≤ '
            f"{3.32 / (64 if dataset == 'digits' else 784):.4f} bpd for "
            f"{'8×8' if dataset == 'digits' else '28×28'} images and 10 "
            'classes); a larger gain at finite training comes from easier '
            'learning, a loss would mean a defect.')
  md.append('')
  if figures:
    md.append('Samples at equal steps, one row per class (top to bottom: '
              + ', '.join(some.get('class_names') or []) + '; the '
              "Trainer's final grid, EMA weights):")
    md.append('')
    for label, path in figures:
      md.append(f'* {label}: ![{label}]'
                f'({_common.relative_to_doc(path, doc_path)})')
    md.append('')
  return _common.text_table(headers, rows), '\n'.join(md)


def main(argv):
  if _common.run_as_worker(argv, worker_main):
    return 0
  parser = _common.base_parser(
      __doc__.split('\n\n')[0], 'conditional',
      'Smoke run: shrunken models, a few steps, no doc unless --output_doc.')
  parser.add_argument('--dataset', default='digits', choices=sorted(CONFIGS))
  parser.add_argument('--steps', type=int, default=None,
                      help='Steps per run (default: the config\'s 600 for '
                      'the digits, 2000 for Fashion-MNIST; 10 with --quick).')
  parser.add_argument('--variants', default=','.join(v[0] for v in VARIANTS),
                      help='Comma-separated: ' +
                      ','.join(v[0] for v in VARIANTS) + ' (none first).')
  parser.add_argument('--regimes', default='steps,cpu',
                      help='steps (equal steps) and/or cpu (equal CPU time).')
  parser.add_argument('--iw_samples', type=int, default=None,
                      help='Importance samples k of the test bpd (16).')
  parser.add_argument('--classifier_samples', type=int, default=1,
                      help='Importance samples per class of the classifier.')
  parser.add_argument('--test_images', type=int, default=None,
                      help='Test images scored (default all of the digits\' '
                      '360, 1000 for Fashion-MNIST).')
  parser.add_argument('--iw_batch', type=int, default=128)
  parser.add_argument('--workdir', default=None)
  _common.add_figures_dir_flag(parser, 'the sample grids and results JSON')
  args = parser.parse_args(argv[1:])
  fashion = args.dataset == 'fashion_mnist'
  defaults = dict(steps=10 if args.quick else (2000 if fashion else 600),
                  iw_samples=2 if args.quick else 16,
                  test_images=32 if args.quick else (1000 if fashion else
                                                     100000))
  for name, value in defaults.items():
    if getattr(args, name) is None:
      setattr(args, name, value)
  command = _common.reproduce_command(
      'conditional.py', argv, ('--output_doc', '--figures_dir', '--workdir'))
  results = run(args)
  doc = _common.output_doc(args)
  figures_dir = _common.figures_dir(args, 'bench_conditional_figures_')
  text, markdown = report(results, command, args, figures_dir,
                          doc or _common.DOC_PATH)
  print(text)
  with open(os.path.join(figures_dir,
                         f'conditional_results_{args.dataset}.json'), 'w') as f:
    json.dump(results, f, indent=1, default=str)
  if doc:
    _common.update_doc_section(f'conditional_{args.dataset}', markdown, doc)
    print(f'wrote the conditional_{args.dataset} section of {doc}')
  if not args.workdir:
    shutil.rmtree(results['workroot'], ignore_errors=True)
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv))
