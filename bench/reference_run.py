#!/usr/bin/env python3
"""The reference training run: its bits/dim curve, samples and test bounds.

    python bench/reference_run.py --workdir=/work/runs/fmnist_ref_main
        # rewrites the reference_run section of docs/benchmarks.md and copies
        # the run's bpd curve and latest samples to docs/figures/

Trains nothing: it reads the run's config.json and metrics.jsonl — bin/train's
evaluation records (validation bound with the EMA weights, train bpd, images/s,
CPU seconds, the final test bound) and every bin/evaluate record of the run
(e.g. ``bin/evaluate --workdir=RUN --num_samples=64 --max_images=1000`` for the
importance-weighted test bound) — and sets them against the per-pixel
histogram baseline of the same data (`tfp_flowpp.data.per_pixel_histogram_bpd`,
fitted on the training split, scored on the whole test split).
"""

import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # pylint: disable=g-import-not-at-top,wrong-import-position

SECTION = 'reference_run'


def _histogram_bpd(data_config, num_levels):
  import numpy as np  # pylint: disable=g-import-not-at-top
  from tfp_flowpp import data as data_lib  # pylint: disable=g-import-not-at-top
  dataset = data_lib.load_dataset(data_config)

  def images(split):
    return np.concatenate([b.numpy() for b in dataset.eval_batches(split,
                                                                   4096)])

  return data_lib.per_pixel_histogram_bpd(images('train'), images('test'),
                                          num_levels)


def _accumulate(records, keys):
  """Makes per-session counters cumulative, in place.

  Trainers before the checkpointed clock restarted ``cpu_seconds`` and
  ``elapsed_sec`` at 0 on every resume; a drop marks a new session, whose
  counts are added to the previous session's last.
  """
  for key in keys:
    offset = previous = 0.
    for record in records:
      raw = float(record.get(key, 0.))
      if raw < previous:
        offset += previous
      previous = raw
      record[key] = raw + offset


def report(workdir, note=''):
  """(text, markdown, figures to copy) of a finished or running workdir."""
  from tfp_flowpp import data as data_lib  # pylint: disable=g-import-not-at-top
  from tfp_flowpp import model_builder  # pylint: disable=g-import-not-at-top
  from tfp_flowpp import training  # pylint: disable=g-import-not-at-top
  run = training.Workdir(workdir)
  try:
    configs = run.read_configs()
  except training.WorkdirError as e:
    raise SystemExit(f'reference_run.py: {e}') from None
  model_config = run.model_config()
  data_config = data_lib.DataConfig(**configs['data'])
  train_config = training.TrainConfig(**configs['train'])
  records = run.read_metrics()
  trained = [r for r in records if 'val_bpd' in r and 'source' not in r]
  if not trained:
    raise SystemExit(f'reference_run.py: {workdir} has no evaluation record '
                     'yet.')
  evaluated = [r for r in records if r.get('source') == 'bin/evaluate']
  _accumulate(trained, ('cpu_seconds', 'elapsed_sec'))
  params = model_builder.count_parameters(
      model_builder.build_model(model_config))
  last = trained[-1]
  histogram = _histogram_bpd(data_config, model_config.num_levels)

  headers = ['step', 'epoch', 'train bpd', 'validation bpd (EMA, k = 1)',
             'train img/s', 'CPU s (cumulative)']
  rows = [[f"{r['step']:,}", f"{r['epoch']:.2f}", f"{r['train_bpd']:.4f}",
           f"{r['val_bpd']:.4f}", f"{r['images_per_sec']:.1f}",
           f"{r['cpu_seconds']:,.0f}"] for r in trained]
  test_headers = ['bound', 'images', 'bits/dim']
  test_rows = []
  if 'test_bpd' in last:
    test_rows.append([f"bin/train final, k = {last['test_num_samples']}",
                      'all test', f"{last['test_bpd']:.4f}"])
  for r in evaluated:
    split = r.get('split', 'test')
    k = r.get(f'{split}_num_samples', 1)
    test_rows.append([f'bin/evaluate {split}, k = {k}',
                      f"{r.get('num_images', 0):,}",
                      f"{r[f'{split}_bpd']:.4f}"])
    if k > 1 and f'{split}_bpd_single_sample' in r:
      test_rows.append([f'bin/evaluate {split}, k = 1 (same images)',
                        f"{r.get('num_images', 0):,}",
                        f"{r[f'{split}_bpd_single_sample']:.4f}"])
  test_rows.append(['per-pixel histogram baseline', 'all test',
                    f'{histogram:.4f}'])

  figures = {}
  for name, target in (('bpd_curve.png', 'reference_run_bpd_curve.png'),
                       ('samples_latest.png', 'reference_run_samples.png')):
    path = os.path.join(run.figures_dir, name)
    if os.path.exists(path):
      figures[path] = target
  steps = f"{last['step']:,} of {train_config.train_steps:,}"
  md = [
      f'## Reference run: {data_config.dataset}', '',
      f'* Model: {params:,} parameters (`{model_config.flow}`, '
      f'{model_config.coupling} coupling, {model_config.components} '
      f'components, {model_config.network} {model_config.filters} filters × '
      f'{model_config.blocks} blocks, {model_config.mixer}; '
      f'{model_config.dequantizer} dequantization), precision '
      f'{model_config.precision}.',
      f'* Training: {steps} steps of batch {train_config.batch_size} '
      f"({last['epoch']:.2f} epochs), Adam {train_config.learning_rate:g} "
      f'with {train_config.warmup_steps} warmup steps and '
      f'{train_config.lr_decay} decay, EMA {train_config.ema_decay} '
      f"(warm-up {'on' if train_config.ema_warmup else 'off'}); "
      f"{last['cpu_seconds']:,.0f} CPU seconds, "
      f"{last['elapsed_sec'] / 3600:.2f} h of wall time in this workdir's "
      'training sessions.',
      f'* Data: {data_config.dataset}, validation '
      f'{data_config.validation_size:,} images held out of the training '
      'split; validation bpd on the first '
      f'{train_config.max_eval_images or "all"} of them.',
      *([f'* {note}'] if note else []),
      '', _common.markdown_table(headers, rows), '',
      _common.markdown_table(test_headers, test_rows), '',
  ]
  for target in figures.values():
    md.append(f'![{target}](figures/{target})')
  bf16 = ', '.join(_common.cpu_bf16_flags()) or 'none'
  md += ['', f'Machine of this report (the run trained on it): '
         f'{_common.cpu_model()}, {_common.cpu_flags_summary()}; bfloat16 '
         f'flags: {bf16}.']
  text = '\n'.join([_common.text_table(headers, rows), '',
                    _common.text_table(test_headers, test_rows)])
  return text, '\n'.join(md), figures


def main(argv):
  parser = _common.base_parser(__doc__.split('\n\n')[0], SECTION,
                               'Print only; no doc.')
  parser.add_argument('--workdir', required=True,
                      help='The bin/train run to report.')
  parser.add_argument('--note', default='',
                      help='A sentence of provenance for the doc (e.g. '
                      'the command, or how the run was resumed).')
  args = parser.parse_args(argv[1:])
  text, markdown, figures = report(args.workdir, args.note)
  print(text)
  doc = _common.output_doc(args)
  if doc:
    figures_dir = os.path.join(os.path.dirname(os.path.abspath(doc)),
                               'figures')
    os.makedirs(figures_dir, exist_ok=True)
    for source, target in figures.items():
      shutil.copyfile(source, os.path.join(figures_dir, target))
    _common.update_doc_section(SECTION, markdown, doc)
    print(f'wrote the {SECTION} section of {doc}')
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv))
