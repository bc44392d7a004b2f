#!/usr/bin/env python3
"""Density quality on Fashion-MNIST at an equal CPU-time budget.

    python bench/quality.py                      # full run, rewrites the
                                                 # quality section of
                                                 # docs/benchmarks.md
    python bench/quality.py --cpu_seconds=1200   # longer budget per model
    python bench/quality.py --quick              # smoke run (< 1 min)
    python bench/quality.py --precision=mixed_bfloat16   # Flow++ models in
                                                 # bf16 (Glow, tfb.Glow
                                                 # float32)
    python bench/quality.py --equal_steps=200,400,800    # float32 against
                                                 # mixed_bfloat16 Flow++ at
                                                 # equal steps

Each model is trained by the library's `Trainer` (flags from its
``configs/*.flags`` file plus ``--max_cpu_seconds`` and evaluation-cadence
overrides) in its own process for the same budget of process CPU time
(user + system over all threads; evaluation excluded — `TrainConfig.
max_cpu_seconds`). Then its EMA weights are scored on the first
``--test_images`` test images with the importance-weighted bound
(k = ``--iw_samples``), and the Trainer's own final pass gives the
single-sample bound on the whole test split.

`tfb.Glow` (TFP's own) is matched in parameters to the Flow++ config and
wrapped as the flow of a `DiscreteImageFlow` with our `LogitPreprocess` and
uniform dequantization (see `_common.build_tfb_glow_model`), so its bits/dim
come from the same code; it is trained by the same `Trainer` (given the
model through ``model_fn``) with ``configs/fashion_mnist_glow.flags``'
optimizer settings, which equal Flow++'s.

``--precision`` sets what the Flow++ models' networks compute in (the Glow
models stay float32, and the table says so). ``--equal_steps=S1,S2,...``
instead trains Flow++ in float32 and in mixed_bfloat16 for the same steps
(same seed and data) and compares validation bits/dim at those steps
(section ``quality_precision`` of the doc).
"""

import json
import math
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # pylint: disable=g-import-not-at-top,wrong-import-position

SCRIPT = os.path.abspath(__file__)

# (key, label, config, kind)
MODELS = (
    ('flowpp', 'Flow++', 'fashion_mnist_flowpp', 'ours'),
    ('no_attention', 'Flow++, no attention', 'fashion_mnist_flowpp_no_attention',
     'ours'),
    ('affine', 'Flow++, affine coupling', 'fashion_mnist_flowpp_affine', 'ours'),
    ('uniform_dequant', 'Flow++, uniform dequantization',
     'fashion_mnist_flowpp_uniform_dequant', 'ours'),
    ('glow', 'Glow (ours)', 'fashion_mnist_glow', 'ours'),
    ('tfb_glow', 'tfb.Glow', 'fashion_mnist_glow', 'tfb_glow'),
)
ABLATIONS = ('no_attention', 'affine', 'uniform_dequant')
PARITY_PRECISIONS = ('float32', 'mixed_bfloat16')
TFB_GLOW_STEPS = 8  # per level, 2 levels (28 = 7·2²), like configs/fashion_mnist_glow
# Quick mode: every model shrunk so the whole script runs in well under a
# minute; exercises every code path, measures nothing.
QUICK_OVERRIDES = ('--filters=8', '--blocks=1', '--components=2',
                   '--dequantizer_filters=8', '--heads=2',
                   '--context_channels=4', '--glow_hidden=8',
                   '--flow=stripe:1 squeeze channel:1',
                   '--dequantizer_flow=stripe:1')

# Worker side ------------------------------------------------------------------------


def worker_main(spec):
  from tfp_flowpp import data as data_lib  # pylint: disable=g-import-not-at-top
  from tfp_flowpp import model_builder  # pylint: disable=g-import-not-at-top
  from tfp_flowpp import training  # pylint: disable=g-import-not-at-top
  results = []
  dataset = None
  for job in spec['jobs']:
    overrides = list(job['overrides'])
    if job['kind'] == 'tfb_glow' and spec.get('quick'):
      overrides = [o for o in overrides if not o.startswith('--flow=')]
    model_config, data_config, train_config = _common.configs(
        job['config'], overrides=overrides)
    if dataset is None:
      dataset = data_lib.load_dataset(data_config)
    model_fn = None
    if job['kind'] == 'tfb_glow':
      model_fn = _common.tfb_glow_model_fn(job['glow'])
    workdir = job['workdir']
    shutil.rmtree(workdir, ignore_errors=True)
    started = time.time()
    trainer = training.Trainer(model_config, data_config, train_config,
                               workdir, dataset=dataset, stream=sys.stderr,
                               model_fn=model_fn)
    final = trainer.run()
    train_wall = time.time() - started
    evaluator = training.BpdEvaluator(trainer.model, seed=4242)
    with training.ema_weights(trainer.model, trainer.optimizer):
      iw = evaluator.evaluate(
          dataset.eval_batches('test', spec['iw_batch']),
          num_samples=spec['iw_samples'], max_images=spec['test_images'])
    metrics = [json.loads(line) for line in open(
        os.path.join(workdir, 'metrics.jsonl'))]
    samples = os.path.join(workdir, 'figures', 'samples_latest.png')
    results.append({
        'key': job['key'],
        'parameters': model_builder.count_parameters(trainer.model),
        'steps': final['step'],
        'batch_size': train_config.batch_size,
        'images_seen': final['step'] * train_config.batch_size,
        'cpu_seconds': final['cpu_seconds'],
        'train_elapsed': final['elapsed_sec'],
        'wall_seconds': train_wall,
        'skipped_steps': final['skipped_steps'],
        'final_val_bpd': final['val_bpd'],
        'final_train_bpd': final.get('train_bpd'),
        'test_bpd_single': final['test_bpd'],
        'iw_bpd': iw['bpd'],
        'iw_images': iw['num_images'],
        'iw_seconds': iw['seconds'],
        'curve': [(m['cpu_seconds'], m['val_bpd'], m['step']) for m in metrics],
        'images_per_sec': [m.get('images_per_sec') for m in metrics],
        'samples': samples if os.path.exists(samples) else None,
        'peak_rss_mib': _common.peak_rss_mib(),
    })
    del trainer
  baseline = None
  if spec.get('baseline'):
    train, test = dataset.arrays('train'), dataset.arrays('test')
    baseline = {
        'full': data_lib.per_pixel_histogram_bpd(train, test,
                                                 dataset.num_levels),
        'subset': data_lib.per_pixel_histogram_bpd(
            train, test[:spec['test_images']], dataset.num_levels),
        'train_images': len(train),
        'test_images': len(test),
    }
  _common.emit_result({'models': results, 'baseline': baseline})


# Driver -----------------------------------------------------------------------------


def _precision(kind, config, args):
  """What a model's networks compute in: ``--precision`` for Flow++ only."""
  if kind == 'ours' and 'flowpp' in config:
    return args.precision
  return 'float32'


def _job(key, config, kind, args, workroot, glow, precision=None,
         train_steps=None):
  precision = precision or _precision(kind, config, args)
  overrides = [
      f'--max_cpu_seconds={0 if train_steps else args.cpu_seconds}',
      f'--train_steps={train_steps or 100000000}',
      f'--precision={precision}',
      f'--eval_every={args.eval_every}',
      '--checkpoint_every=100000000',
      f'--log_every={min(50, args.eval_every)}',
      '--test_num_samples=1',
      # Runs of a few hundred to a few thousand steps: a short warmup and an
      # EMA horizon of ~100 steps, the same for every model (the configs'
      # 200-step warmup and 0.999 EMA are for 20k-step runs; with them the
      # slowest models would be scored mostly on their initial weights).
      f'--warmup_steps={args.warmup_steps}',
      f'--ema_decay={args.ema_decay}',
      f'--max_eval_images={args.val_images}',
      f'--eval_batch_size={args.iw_batch}',
  ]
  if args.quick:
    overrides += list(QUICK_OVERRIDES) + ['--num_sample_images=16',
                                          '--init_batch_size=64']
  return {'key': key, 'config': config, 'kind': kind, 'overrides': overrides,
          'workdir': os.path.join(workroot, key), 'glow': glow,
          'precision': precision}


def run(args):
  load, busy = _common.wait_for_quiet(timeout=args.wait_for_quiet)
  env = _common.environment(load, busy)
  started = time.time()
  workroot = args.workdir or tempfile.mkdtemp(prefix='bench_quality_')
  keys = args.models.split(',') if args.models else [m[0] for m in MODELS]
  models = [m for m in MODELS if m[0] in keys]

  # tfb.Glow matched to the Flow++ config's parameter count.
  from tfp_flowpp import model_builder  # pylint: disable=g-import-not-at-top
  overrides = list(QUICK_OVERRIDES) if args.quick else []
  flowpp_config, _, _ = _common.configs('fashion_mnist_flowpp', (28, 28, 1),
                                        256, overrides)
  target = model_builder.count_parameters(
      model_builder.build_model(flowpp_config))
  steps = 1 if args.quick else TFB_GLOW_STEPS
  hidden, count = _common.match_tfb_glow(target, (28, 28, 1), 2, steps)
  glow = {'num_blocks': 2, 'steps': steps, 'hidden': hidden}

  def log(text):
    print(f'[{time.time() - started:6.0f}s] {text}', flush=True)

  common = {'iw_samples': args.iw_samples, 'test_images': args.test_images,
            'iw_batch': args.iw_batch, 'quick': args.quick}
  results = {'env': env, 'models': {}, 'glow': dict(glow, parameters=count,
                                                     target=target)}
  if args.equal_steps:
    steps = max(args.equal_steps)
    models = [(f'flowpp_{p}', f'Flow++, {p}', 'fashion_mnist_flowpp', 'ours')
              for p in PARITY_PRECISIONS]
    jobs = [_job(k, c, kind, args, workroot, glow, precision=p,
                 train_steps=steps)
            for (k, _, c, kind), p in zip(models, PARITY_PRECISIONS)]
  else:
    jobs = [_job(k, c, kind, args, workroot, glow)
            for k, _, c, kind in models]
  if args.quick:
    # One process for everything: only the code paths matter here.
    out = _common.run_worker(SCRIPT, dict(common, jobs=jobs, baseline=True),
                             timeout=600)
    results['baseline'] = out['baseline']
    for r in out['models']:
      results['models'][r['key']] = r
  else:
    for i, job in enumerate(jobs):
      out = _common.run_worker(
          SCRIPT, dict(common, jobs=[job], baseline=i == len(jobs) - 1),
          timeout=4 * 3600)
      r = out['models'][0]
      results['models'][r['key']] = r
      if out['baseline']:
        results['baseline'] = out['baseline']
      log(f"{job['key']}: {r['steps']} steps in {r['cpu_seconds']:.0f} CPU-s, "
          f"IW test bpd {r['iw_bpd']:.4f} ({out['worker_seconds']:.0f}s)")
  results['labels'] = {k: label for k, label, _, _ in models}
  results['configs'] = {k: c for k, _, c, _ in models}
  results['precisions'] = {j['key']: j['precision'] for j in jobs}
  results['seconds'] = time.time() - started
  results['load_after'] = _common.load_average()
  results['workroot'] = workroot
  return results


# Report -----------------------------------------------------------------------------


def _figures(results, figures_dir, prefix):
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  os.makedirs(figures_dir, exist_ok=True)
  paths = {}
  labels = results['labels']
  # Left: the whole run; right: its second half, where the curves of models
  # that differ by hundredths of a bit (and may cross) can be told apart.
  fig, (ax, zoom) = plt.subplots(1, 2, figsize=(13, 5))
  all_y = [c[1] for r in results['models'].values() for c in r['curve']]
  end = max((c[0] for r in results['models'].values() for c in r['curve']),
            default=0.)
  zoom_y = []
  for key, r in results['models'].items():
    xs = [c[0] for c in r['curve']]
    ys = [c[1] for c in r['curve']]
    for panel in (ax, zoom):
      panel.plot(xs, ys, marker='o', markersize=3, label=labels[key])
    zoom_y += [y for x, y in zip(xs, ys) if x >= end / 2]
  if results.get('baseline'):
    ax.axhline(results['baseline']['full'], color='gray', linestyle='--',
               label='per-pixel histogram')
  for panel in (ax, zoom):
    panel.set_xlabel('training CPU seconds (user + system, both cores)')
    panel.grid(alpha=0.3)
  ax.set_ylabel('validation bits/dim (EMA weights, single-sample bound)')
  ax.set_title('Fashion-MNIST: validation bits/dim vs CPU time')
  zoom.set_title('second half of the budget')
  if all_y:
    low = min(all_y)
    high = max(results['baseline']['full'] if results.get('baseline') else 0,
               min(max(all_y), low + 2.5))
    ax.set_ylim(low - 0.05, high + 0.1)
  if zoom_y and end > 0:
    pad = max(0.01, 0.05 * (max(zoom_y) - min(zoom_y)))
    zoom.set_xlim(end / 2, end * 1.01)
    zoom.set_ylim(min(zoom_y) - pad, max(zoom_y) + pad)
  ax.legend(fontsize=8)
  fig.tight_layout()
  paths['curve'] = os.path.join(figures_dir, f'{prefix}bpd_vs_cpu.png')
  fig.savefig(paths['curve'], dpi=110)
  plt.close(fig)

  keys = [k for k, r in results['models'].items() if r.get('samples')]
  paths['samples'] = {}
  for key in keys:
    dest = os.path.join(figures_dir, f'{prefix}samples_{key}.png')
    shutil.copyfile(results['models'][key]['samples'], dest)
    paths['samples'][key] = dest
  if keys:
    cols = min(3, len(keys))
    rows = (len(keys) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.5 * rows),
                             squeeze=False)
    for ax in axes.ravel():
      ax.axis('off')
    for ax, key in zip(axes.ravel(), keys):
      ax.imshow(Image.open(paths['samples'][key]), cmap='gray')
      ax.set_title(labels[key], fontsize=9)
    fig.tight_layout()
    paths['grid'] = os.path.join(figures_dir, f'{prefix}samples_all.png')
    fig.savefig(paths['grid'], dpi=110)
    plt.close(fig)
  return paths


def report(results, command, args, figure_paths, doc_path):
  env = results['env']
  models = results['models']
  labels = results['labels']
  base = results.get('baseline') or {}
  rows = []
  for key, r in models.items():
    delta = ''
    if 'flowpp' in models and key != 'flowpp':
      delta = f"{r['iw_bpd'] - models['flowpp']['iw_bpd']:+.3f}"
    rows.append([
        labels[key], f"`{results['configs'][key]}`" if key != 'tfb_glow' else
        f"tfb.Glow 2×{results['glow']['steps']}, hidden "
        f"{results['glow']['hidden']}",
        results.get('precisions', {}).get(key, 'float32'),
        f"{r['parameters']:,}",
        f"{r['iw_bpd']:.4f}", delta, f"{r['test_bpd_single']:.4f}",
        f"{r['final_val_bpd']:.4f}", f"{r['steps']:,}",
        f"{r['images_seen']:,}", f"{r['cpu_seconds']:.0f}",
        (f"{r['images_seen'] / r['train_elapsed']:.0f}"
         if r['train_elapsed'] >= 1 else '–')
    ])
  if base:
    rows.append(['per-pixel histogram', '`per_pixel_histogram_bpd`', '–', '–',
                 f"{base['subset']:.4f}", '', f"{base['full']:.4f}", '', '',
                 '', '', ''])
  headers = ['model', 'config', 'networks in', 'params',
             f"test bpd, IW k={args.iw_samples} (first {args.test_images:,})",
             'Δ vs Flow++', 'test bpd, k=1 (all 10,000)', 'val bpd (final)',
             'steps', 'images seen', 'CPU s', 'train img/s']

  # Verdicts on the seeds' claim.
  claims = []
  if 'flowpp' in models:
    for key in ABLATIONS:
      if key in models:
        d = models[key]['iw_bpd'] - models['flowpp']['iw_bpd']
        claims.append([
            f'Flow++ beats {labels[key]}',
            f"{models['flowpp']['iw_bpd']:.4f} vs {models[key]['iw_bpd']:.4f}"
            f' ({d:+.4f})', 'holds' if d > 0 else 'does NOT hold'
        ])

  md = ['## Quality: Fashion-MNIST at an equal CPU budget', '']
  md += _common.environment_lines(env, command, results.get('load_after'))
  md.append(
      f"* Budget: **{args.cpu_seconds:.0f} CPU seconds of training per model** "
      '(`TrainConfig.max_cpu_seconds`: process user + system time over both '
      'cores; evaluation excluded), one model after the other, each in its '
      f"own process. Whole run: {results['seconds'] / 60:.0f} min wall.")
  md.append(
      f"* Test bpd: importance-weighted bound with k = {args.iw_samples} on "
      f"the **first {args.test_images:,} images of the 10,000-image test "
      'split** (the IW bound on all 10,000 would cost several times the '
      'training budget of a model), EMA weights; the single-sample bound on the whole test split '
      'is the Trainer\'s own final evaluation. Validation: '
      f'{args.val_images:,} of the 5,000 held-out training images, k = 1, '
      f'every {args.eval_every} steps.')
  md.append(
      f"* Data: Debian's `dataset-fashion-mnist` IDX files via "
      f"`DataConfig(dataset='fashion_mnist', validation_size=5000)`: "
      f"{base.get('train_images', 55000):,} training, 5,000 validation, "
      f"{base.get('test_images', 10000):,} test images, 256 levels.")
  md.append('')
  md.append(_common.markdown_table(headers, rows))
  md.append('')
  md.append(
      '*images seen* = steps × batch 64; *train img/s* = images seen ÷ '
      'training wall time (evaluations excluded). `tfb.Glow`: TFP\'s '
      '`tfb.Glow` (2 levels × '
      f"{results['glow']['steps']} steps, `GlowDefaultNetwork` hidden width "
      f"{results['glow']['hidden']}, `GlowDefaultExitNetwork`) with "
      f"{results['glow']['parameters']:,} parameters, matched to Flow++'s "
      f"{results['glow']['target']:,}; it is the flow of a "
      '`DiscreteImageFlow` with our `LogitPreprocess` and uniform '
      'dequantization, so its bound is computed by the same code, and it is '
      'trained by the same `Trainer` (given the model through `model_fn`) '
      "with `fashion_mnist_glow.flags`' optimizer settings (Adam 1e-3, "
      "batch 64, clip 1 — the same as Flow++'s). For all models the bench "
      f'overrides the warmup to {args.warmup_steps} steps and the EMA decay to '
      f'{args.ema_decay} (the configs\' 200 / 0.999 are meant for 20k-step '
      'runs; in a budget of a few hundred steps they would leave the slower '
      'models scored mostly on their initial weights). The '
      'per-pixel histogram row is `tfp_flowpp.data.per_pixel_histogram_bpd` '
      '(Laplace-smoothed per-pixel categorical fitted on the training split): '
      'on the same test subset, and on all 10,000.')
  md.append('')
  if claims:
    md.append('Claim under test — full Flow++ beats each ablation (IW test '
              'bpd, lower is better):')
    md.append('')
    md.append(_common.markdown_table(['claim', 'Flow++ vs ablation',
                                      'verdict'], claims,
                                     align=['l', 'r', 'l']))
    md.append('')
  if figure_paths.get('curve'):
    md.append('Validation bits/dim against training CPU time (EMA weights, '
              'from each run\'s `metrics.jsonl`):')
    md.append('')
    md.append(f"![bpd vs CPU seconds]"
              f"({_common.relative_to_doc(figure_paths['curve'], doc_path)})")
    md.append('')
  if figure_paths.get('grid'):
    md.append('Samples (temperature 0.7, EMA weights, the Trainer\'s final '
              'sample grid; one file per model in `docs/figures/'
              'quality_samples_*.png`):')
    md.append('')
    md.append(f"![samples]"
              f"({_common.relative_to_doc(figure_paths['grid'], doc_path)})")
    md.append('')
  out = [_common.text_table(headers, rows)]
  if claims:
    out += ['', _common.text_table(['claim', 'Flow++ vs ablation', 'verdict'],
                                   claims)]
  return '\n'.join(out), '\n'.join(md)


def parity_report(results, command, args):
  """float32 against mixed_bfloat16 Flow++ at equal steps (text, markdown)."""
  env = results['env']
  runs = [results['models'][f'flowpp_{p}'] for p in PARITY_PRECISIONS]
  by_step = [{c[2]: c[1] for c in r['curve']} for r in runs]
  headers = ['step', 'val bpd float32', 'val bpd mixed_bfloat16',
             'bf16 − float32']
  rows = []
  for step in args.equal_steps:
    values = [b.get(step) for b in by_step]
    rows.append([f'{step:,}'] + [
        f'{v:.4f}' if v is not None else '–' for v in values
    ] + [f'{values[1] - values[0]:+.4f}' if None not in values else '–'])
  rates = [r['images_seen'] / r['train_elapsed'] if r['train_elapsed'] >= 1
           else float('nan') for r in runs]
  md = ['## Quality: mixed_bfloat16 against float32 at equal steps', '']
  md += _common.environment_lines(env, command, results.get('load_after'))
  md.append(
      f'* Flow++ (`fashion_mnist_flowpp`, {runs[0]["parameters"]:,} '
      f'parameters) trained for {max(args.equal_steps):,} steps in each '
      'precision with the same seed, data order and initial weights; '
      f'validation: {args.val_images:,} held-out images, k = 1, EMA weights '
      f'(decay {args.ema_decay}), warmup {args.warmup_steps} steps. Target: '
      '|bf16 − float32| ≤ 0.02 bits/dim at every step.')
  md.append(
      f'* Training throughput: float32 {rates[0]:.1f} img/s, mixed_bfloat16 '
      f'{rates[1]:.1f} img/s ({rates[1] / rates[0]:.2f}×; wall time with '
      'evaluations excluded, on this machine, load as above).')
  md.append('')
  md.append(_common.markdown_table(headers, rows))
  md.append('')
  return _common.text_table(headers, rows), '\n'.join(md)


def main(argv):
  if _common.run_as_worker(argv, worker_main):
    return 0
  parser = _common.base_parser(
      __doc__.split('\n\n')[0], 'quality',
      'Smoke run: shrunken models, seconds of training, no doc unless '
      '--output_doc.')
  parser.add_argument('--cpu_seconds', type=float, default=None,
                      help='Training CPU seconds per model (default 300; '
                      '4 with --quick).')
  parser.add_argument('--models', default='',
                      help='Comma-separated keys: ' +
                      ','.join(m[0] for m in MODELS))
  parser.add_argument('--test_images', type=int, default=None,
                      help='First N test images for the IW bound (256).')
  parser.add_argument('--iw_samples', type=int, default=None,
                      help='Importance samples k (64).')
  parser.add_argument('--iw_batch', type=int, default=256,
                      help='Images per evaluation batch.')
  parser.add_argument('--val_images', type=int, default=None,
                      help='Validation images per periodic evaluation (1000).')
  parser.add_argument('--eval_every', type=int, default=None,
                      help='Steps between validation evaluations (100).')
  parser.add_argument('--warmup_steps', type=int, default=50,
                      help='Learning-rate warmup of every model (steps).')
  parser.add_argument('--ema_decay', type=float, default=0.99,
                      help='EMA decay of every model (evaluated weights).')
  parser.add_argument('--workdir', default=None,
                      help='Where the training runs go (default: a temp dir).')
  parser.add_argument('--precision', default='float32',
                      choices=('float32', 'mixed_bfloat16', 'mixed_float16'),
                      help='What the Flow++ models\' networks compute in '
                      '(Glow and tfb.Glow stay float32).')
  parser.add_argument('--equal_steps', default='',
                      help='Comma-separated steps, e.g. 200,400,800: train '
                      'Flow++ in float32 and mixed_bfloat16 to the largest '
                      'and compare validation bpd at each (instead of the '
                      'equal-CPU table).')
  _common.add_figures_dir_flag(parser)
  args = parser.parse_args(argv[1:])
  defaults = dict(cpu_seconds=(4. if args.quick else 300.),
                  test_images=(32 if args.quick else 256),
                  iw_samples=(2 if args.quick else 64),
                  val_images=(32 if args.quick else 1000),
                  eval_every=(10 if args.quick else 100))
  args.equal_steps = sorted(int(s) for s in args.equal_steps.split(',') if s)
  if args.equal_steps:
    defaults['eval_every'] = math.gcd(*args.equal_steps)
  for name, value in defaults.items():
    if getattr(args, name) is None:
      setattr(args, name, value)
  command = _common.reproduce_command(
      'quality.py', argv, ('--output_doc', '--figures_dir', '--workdir'))
  results = run(args)
  doc = _common.output_doc(args)
  figures_dir = _common.figures_dir(args, 'bench_quality_figures_')
  section, prefix = 'quality', 'quality_'
  if args.equal_steps:
    section, prefix = 'quality_precision', 'quality_precision_'
    text, markdown = parity_report(results, command, args)
  else:
    figure_paths = _figures(results, figures_dir, prefix)
    text, markdown = report(results, command, args, figure_paths,
                            doc or _common.DOC_PATH)
  print(text)
  os.makedirs(figures_dir, exist_ok=True)
  with open(os.path.join(figures_dir, f'{prefix}results.json'), 'w') as f:
    json.dump(results, f, indent=1, default=str)
  if doc:
    _common.update_doc_section(section, markdown, doc)
    print(f'wrote the {section} section of {doc}')
  if not args.workdir:
    shutil.rmtree(results['workroot'], ignore_errors=True)
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv))
