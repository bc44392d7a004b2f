#!/usr/bin/env python3
"""Out-of-distribution detection: AUROC of raw bits/dim, typicality, input
complexity and likelihood ratio, for trained models against OOD sets.

    python bench/ood.py --digits_workdir=RUN \\
        [--digits_background_workdir=RUN] [--digits_heldout_workdir=RUN]
    python bench/ood.py --workdir=FMNIST_RUN --background_workdir=RUN \\
        --heldout_workdir=RUN [--heldout_background_workdir=RUN]
    python bench/ood.py --quick      # smoke run on tests/data/v0_1_tiny_workdir
    python bench/ood.py --write_perturbed=RUN --out=FILE.npz \\
        [--mutation_rate=0.2] [--copies=1]
    python bench/ood.py --write_patches --image_size=8 --num_levels=17 \\
        --out=FILE.npz   # generic photo patches for --*complexity_workdir

bench/ood_models.py trains every model of one dataset's experiment (model,
background, generic and held-out models) and then runs this script, in one
resumable command.

Each experiment (a model, its in-distribution test images and its OOD sets)
runs in its own worker process through `tfp_flowpp.scoring` and reports, for
every OOD set, the AUROC and AUPR (`sklearn.metrics`, OOD images positive)
of each score: raw bits/dim, the typicality statistic for single images
(M = 1) and for disjoint random batches of 10, the complexity-corrected
bits/dim for PNG and WebP, and the likelihood ratio against a background
model, and, with ``--complexity_workdir`` (``--digits_complexity_workdir``,
...), the complexity-corrected bits/dim with our own code length under a
generic model. Results are kept per experiment in ``ood_results.json`` beside the
figures, so the digits part and the Fashion-MNIST part can be run at
different times and still fill one section of docs/benchmarks.md.

OOD sets, built from the model's own test images where they are transforms
(shift: a quarter of the side, right and down, zero fill):

* for a Fashion-MNIST model (28x28, 256 levels): the scikit-learn digits
  rescaled to 256 levels and upscaled to 28x28 (bilinear); Fashion-MNIST
  test inverted, flipped vertically and shifted by 7 pixels; uniform noise;
  constant images (one uniformly drawn level per image); and, with
  ``--heldout_workdir`` (a run trained on some classes), the test images of
  the classes it never saw;
* for a digits model (8x8, 17 levels): Fashion-MNIST test downscaled to 8x8
  (area) and reduced to 17 levels; digits inverted, flipped, shifted by 2;
  noise; constant images; the held-out class with
  ``--digits_heldout_workdir``.

The background model of the likelihood ratio (Ren et al. 2019) is trained on
pixel-perturbed training images: ``bin/train --perturbation_rate=0.2``
perturbs every training batch afresh (keyed by seed and step), and
``--write_perturbed`` writes a run's training split with every pixel
replaced by a uniform random level with probability ``--mutation_rate``
(``--copies`` independent draws) to an .npz, which ``bin/train
--dataset=npz:FILE`` trains on like any data set.
"""

import json
import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # pylint: disable=g-import-not-at-top,wrong-import-position
from _ood_experiments import EXPERIMENTS, complexity_flag  # pylint: disable=g-import-not-at-top,wrong-import-position

SCRIPT = os.path.abspath(__file__)
GOLDEN = os.path.join(_common.ROOT, 'tests', 'data', 'v0_1_tiny_workdir')

TYPICALITY_BATCH = 10
# Score columns of the tables: (result key, header).
SCORES = (
    ('bpd', 'raw bpd'),
    ('typicality', 'typicality M=1'),
    (f'typicality_m{TYPICALITY_BATCH}', f'typicality M={TYPICALITY_BATCH}'),
    ('complexity_png', 'S (PNG)'),
    ('complexity_webp', 'S (WebP)'),
    ('complexity_flowpp', 'S (flowpp)'),
    ('likelihood_ratio', 'LLR'),
)

# Scores the target "S or LLR >= 0.9" counts.
CORRECTED = ('complexity_png', 'complexity_webp', 'complexity_flowpp',
             'likelihood_ratio')


# Images --------------------------------------------------------------------------


def _shifted(images):
  import numpy as np  # pylint: disable=g-import-not-at-top
  shift = images.shape[1] // 4
  out = np.zeros_like(images)
  out[:, shift:, shift:] = images[:, :-shift, :-shift]
  return out, shift


def _other_dataset(own_dataset, image_shape, num_levels, count, seed):
  """(name, images): the other real data set, fitted to the model's images."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from tfp_flowpp import data as data_lib  # pylint: disable=g-import-not-at-top
  from tfp_flowpp.data import transforms  # pylint: disable=g-import-not-at-top
  size = image_shape[0]
  if own_dataset == 'digits':
    ds = data_lib.load_dataset(data_lib.DataConfig(dataset='fashion_mnist'))
    images = ds.arrays('test')
    source_levels = 256
    what = 'Fashion-MNIST test'
  else:
    ds = data_lib.load_dataset(data_lib.DataConfig(
        dataset='digits', validation_size=0, test_size=0))
    images = ds.arrays('train')
    source_levels = ds.num_levels
    what = 'scikit-learn digits'
  images = images[np.random.default_rng([seed, 11]).permutation(
      len(images))[:count]]
  if source_levels != num_levels:  # Rescale the levels first ...
    images = np.round(images.astype(np.float64) * (num_levels - 1) /
                      (source_levels - 1)).astype(np.uint8)
  resized = images.shape[1] != size
  if resized:  # ... then resize (area down, bilinear up).
    images = transforms.center_crop_resize_np(images, size, num_levels)
  if images.shape[-1] != image_shape[-1]:
    images = np.repeat(images[..., :1], image_shape[-1], axis=-1)
  verb = ('downscaled' if ds.image_shape[0] > size else 'upscaled')
  name = (f'{what}, {num_levels} levels' +
          (f', {verb} to {size}×{size}' if resized else ''))
  return name, images


def ood_sets(own_dataset, test_images, num_levels, seed):
  """[(name, images)] of the non-class OOD sets for a model's test images."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng([seed, 13])
  n, shape = len(test_images), test_images.shape[1:]
  shifted, shift = _shifted(test_images)
  constant = rng.integers(0, num_levels, (n, 1, 1, 1)) * np.ones(
      (1,) + shape, np.int64)
  return [
      _other_dataset(own_dataset, shape, num_levels, n, seed),
      ('test images inverted (L − 1 − x)',
       (num_levels - 1 - test_images.astype(np.int64)).astype(np.uint8)),
      ('test images flipped vertically', test_images[:, ::-1].copy()),
      (f'test images shifted {shift} px right and down', shifted),
      ('uniform noise', rng.integers(0, num_levels, (n,) + shape)
       .astype(np.uint8)),
      ('constant images', constant.astype(np.uint8)),
  ]


def _heldout_set(own_config, count):
  """(name, images) of the classes a run did not train on."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from tfp_flowpp import data as data_lib  # pylint: disable=g-import-not-at-top
  everything = data_lib.load_dataset(data_lib.DataConfig(
      dataset=own_config.dataset, data_dir=own_config.data_dir,
      validation_size=0, test_size=0))
  labels = np.unique(np.concatenate(
      [everything.labels(s) for s in ('train', 'test')
       if everything.num_examples[s]]))
  missing = tuple(int(c) for c in labels if c not in own_config.classes)
  if not own_config.classes or not missing:
    raise ValueError('a held-out-class run must be trained on a subset of '
                     'the classes (bin/train --classes=...).')
  ds = data_lib.load_dataset(data_lib.DataConfig(
      dataset=own_config.dataset, data_dir=own_config.data_dir,
      classes=missing, validation_size=0, test_size=0,
      image_size=own_config.image_size, num_bits=own_config.num_bits))
  split = 'test' if ds.num_examples['test'] else 'train'
  names = everything.class_names
  label = ', '.join(f'{c} ({names[c]})' if names else str(c) for c in missing)
  where = 'test images' if split == 'test' else 'all images'
  return f'held-out class {label}, {where}', ds.arrays(split)[:count]


# Worker ------------------------------------------------------------------------------


def _training_summary(workdir):
  from tfp_flowpp import training  # pylint: disable=g-import-not-at-top
  w = training.Workdir(workdir)
  configs = w.read_configs()
  records = w.read_metrics()
  last = {}
  for record in records:
    last.update({k: v for k, v in record.items() if v is not None})
  dataset = configs['data']['dataset']
  perturbation = None
  if dataset.startswith('npz:') and os.path.isfile(dataset[4:]):
    import numpy as np  # pylint: disable=g-import-not-at-top
    with np.load(dataset[4:]) as f:
      if 'mutation_rate' in f.files:
        perturbation = [float(f['mutation_rate']), int(f['copies'])]
    dataset = 'npz:' + os.path.basename(dataset[4:])
  if configs['data'].get('perturbation_rate'):  # Fresh draws every batch.
    perturbation = [configs['data']['perturbation_rate'], None]
  return {
      'workdir': os.path.abspath(workdir),
      'dataset': dataset,
      'perturbation': perturbation,
      'classes': configs['data']['classes'],
      'steps': last.get('step'),
      'cpu_seconds': last.get('cpu_seconds'),
      'elapsed_seconds': last.get('elapsed_sec'),
      'test_bpd': last.get('test_bpd'),
      'test_num_samples': last.get('test_num_samples'),
  }


def worker_main(spec):
  """Scores one experiment; emits its result dict."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from tfp_flowpp import data as data_lib  # pylint: disable=g-import-not-at-top
  from tfp_flowpp import scoring  # pylint: disable=g-import-not-at-top
  from tfp_flowpp import training  # pylint: disable=g-import-not-at-top
  started = time.time()
  model, configs, step = training.restore_for_inference(spec['workdir'])
  background = codec = None
  if spec.get('background_workdir'):
    background, _, _ = training.restore_for_inference(
        spec['background_workdir'])
  if spec.get('complexity_workdir'):
    from tfp_flowpp.scoring import complexity  # pylint: disable=g-import-not-at-top
    codec = complexity.load_codec(spec['complexity_workdir'], model)
  k = spec['num_samples']
  config = scoring.ScoringConfig(
      num_samples=k, score_bound='single' if k == 1 else 'importance_weighted',
      batch_size=spec['batch_size'], seed=spec['seed'])
  scorer = scoring.ImageScorer(model, config, background,
                               complexity_codec=codec)
  own_config = data_lib.DataConfig(**configs['data'])
  ds = data_lib.load_dataset(own_config)
  rng = np.random.default_rng([spec['seed'], 5])

  def subset(split, limit):
    images = ds.arrays(split)
    if limit and limit < len(images):
      images = images[np.sort(rng.choice(len(images), limit, replace=False))]
    return images

  test_images = subset('test', spec['max_images'])
  typicality, reference, held = scorer.fit_typicality(
      subset('train', spec['reference_images']),
      subset('validation', spec['reference_images']))
  if spec['heldout']:
    sets = [_heldout_set(own_config, spec['max_images'] or None)]
  else:
    sets = ood_sets(own_config.dataset, test_images, model.num_levels,
                    spec['seed'])

  def scores_of(images):
    columns = scorer.score(images, typicality)
    b = columns[config.score_column]
    columns[f'typicality_m{TYPICALITY_BATCH}'] = typicality.batch_statistics(
        b, TYPICALITY_BATCH, spec['seed'])
    columns['bpd'] = b  # The raw score is the scoring bound.
    return columns

  inside = scores_of(test_images)
  results = []
  histograms = {'in-distribution test': _histogram_data(inside)}
  for name, images in sets:
    columns = scores_of(images)
    metrics = {}
    for key, _ in SCORES:
      if key in columns:
        metrics[key] = scoring.detection_metrics(inside[key], columns[key])
    results.append({
        'name': name,
        'num_images': int(len(images)),
        'mean_bpd': float(columns['bpd'].mean()),
        'mean_png_bpd': float(columns['png_bits'].mean() / model.num_dims),
        **_mean_flowpp_bpd(columns, model.num_dims),
        **_mean_background_bpd(columns),
        'metrics': metrics,
    })
    histograms[name] = _histogram_data(columns)
  _common.emit_result({
      'key': spec['key'],
      'step': step,
      'model': _training_summary(spec['workdir']),
      'background': (_training_summary(spec['background_workdir'])
                     if spec.get('background_workdir') else None),
      'complexity_model': (_training_summary(spec['complexity_workdir'])
                           if spec.get('complexity_workdir') else None),
      'image_shape': list(model.image_shape),
      'num_levels': model.num_levels,
      'num_samples': k,
      'num_test_images': int(len(test_images)),
      'test_mean_bpd': float(inside['bpd'].mean()),
      'test_mean_png_bpd': float(inside['png_bits'].mean() / model.num_dims),
      **{f'test_{k}': v for k, v in
         _mean_flowpp_bpd(inside, model.num_dims).items()},
      **{f'test_{k}': v for k, v in _mean_background_bpd(inside).items()},
      'entropy_bpd': typicality.entropy_bpd,
      'reference_images': [int(len(reference)), int(len(held))],
      'validation_mean_bpd': float(held.mean()),
      'sets': results,
      'histograms': histograms,
      'seconds': time.time() - started,
  })


def _mean_background_bpd(columns):
  """{'mean_background_bpd': the background model's mean bound} if scored.

  Next to the model's mean bpd it shows which of the two finds a set more
  likely, i.e. the sign of the mean likelihood ratio.
  """
  if 'background_bpd' not in columns:
    return {}
  return {'mean_background_bpd': float(columns['background_bpd'].mean())}


def _mean_flowpp_bpd(columns, num_dims):
  """{'mean_flowpp_bpd': L/D of the generic model} if it was scored."""
  if 'flowpp_bits' not in columns:
    return {}
  return {'mean_flowpp_bpd': float(columns['flowpp_bits'].mean() / num_dims)}


def _histogram_data(columns):
  keys = ('bpd', 'complexity_png', 'complexity_flowpp', 'likelihood_ratio')
  return {k: [round(float(v), 5) for v in columns[k]] for k in keys
          if k in columns}


# Perturbed training data ----------------------------------------------------------


def write_perturbed(workdir, out, rate, copies, seed):
  """Writes a run's perturbed training split (and validation as test)."""
  import io  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from tfp_flowpp import data as data_lib  # pylint: disable=g-import-not-at-top
  from tfp_flowpp import training  # pylint: disable=g-import-not-at-top
  from tfp_flowpp.data import transforms  # pylint: disable=g-import-not-at-top
  from tfp_flowpp.training import atomic_files  # pylint: disable=g-import-not-at-top
  if not 0 < rate < 1:
    raise ValueError(f'--mutation_rate must be in (0, 1), got {rate}.')
  configs = training.Workdir(workdir).read_configs()
  ds = data_lib.load_dataset(data_lib.DataConfig(**configs['data']))

  def perturbed(images, draw):
    return transforms.perturb_pixels(images, rate, ds.num_levels,
                                     [seed, draw]).numpy()

  train = ds.arrays('train')
  images = np.concatenate([perturbed(train, 17 + i) for i in range(copies)])
  held = ds.arrays('validation') if ds.num_examples['validation'] else train
  buffer = io.BytesIO()
  np.savez(buffer, images=images, test_images=perturbed(held, 16),
           num_levels=np.int64(ds.num_levels),
           mutation_rate=np.float64(rate), copies=np.int64(copies))
  atomic_files.atomic_write_bytes(out, buffer.getvalue())
  print(f'Wrote {len(images)} perturbed training images ({copies} x '
        f'{len(train)}, rate {rate}) of {ds.name} to {out}; train the '
        f'background with bin/train --flagfile=<the run\'s flags> '
        f'--dataset=npz:{out} --workdir=BACKGROUND_RUN')


# Generic images for our own code length ---------------------------------------------


def write_patches(out, image_size, num_levels, count, seed):
  """Writes grey patches of scikit-learn's two sample photographs to ``out``.

  A generic image set of the model's shape that is none of the OOD sets:
  random ``image_size``² crops of the luminance of ``china.jpg`` and
  ``flower.jpg`` (`sklearn.datasets.load_sample_images`), each photo
  area-downscaled by 2^0 … 2^-4 first, quantized to ``num_levels``. The
  model trained on it (``bin/train --dataset=npz:FILE``) gives the code
  length L(x) of the S (flowpp) score (``--complexity_workdir``).
  """
  import io  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from sklearn import datasets  # pylint: disable=g-import-not-at-top
  from tfp_flowpp.training import atomic_files  # pylint: disable=g-import-not-at-top
  if not 2 <= num_levels <= 256:
    raise ValueError(f'--num_levels must be in [2, 256], got {num_levels}.')
  rng = np.random.default_rng([seed, 23])
  pyramid = []
  for photo in datasets.load_sample_images().images:
    grey = Image.fromarray(photo).convert('L')
    for octave in range(5):
      w, h = grey.width >> octave, grey.height >> octave
      if min(w, h) >= 2 * image_size:
        pyramid.append(np.asarray(grey.resize((w, h), Image.BOX)))

  def crops(n):
    out = np.empty((n, image_size, image_size, 1), np.uint8)
    for i, level in enumerate(rng.integers(0, len(pyramid), n)):
      image = pyramid[level]
      y = rng.integers(0, image.shape[0] - image_size + 1)
      x = rng.integers(0, image.shape[1] - image_size + 1)
      out[i, ..., 0] = image[y:y + image_size, x:x + image_size]
    return np.round(out * ((num_levels - 1) / 255.)).astype(np.uint8)

  buffer = io.BytesIO()
  np.savez(buffer, images=crops(count), test_images=crops(max(count // 10, 1)),
           num_levels=np.int64(num_levels))
  atomic_files.atomic_write_bytes(out, buffer.getvalue())
  print(f'Wrote {count} + {max(count // 10, 1)} test {image_size}×{image_size} '
        f'patches ({num_levels} levels, {len(pyramid)} photo scales) to {out}; '
        'train the generic model with bin/train --flagfile=<the run\'s flags> '
        f'--dataset=npz:{out} --workdir=GENERIC_RUN')


# Report ------------------------------------------------------------------------------


def _figure(result, path):
  """Histograms of raw bpd, S (PNG), S (flowpp) and LLR: in-distribution vs
  every set."""
  import io  # pylint: disable=g-import-not-at-top
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from tfp_flowpp.training import atomic_files  # pylint: disable=g-import-not-at-top
  keys = [k for k in ('bpd', 'complexity_png', 'complexity_flowpp',
                      'likelihood_ratio')
          if k in result['histograms']['in-distribution test']]
  titles = {'bpd': 'raw bits/dim', 'complexity_png': 'S = bpd − L_PNG/D',
            'complexity_flowpp': 'S = bpd − L_flowpp/D',
            'likelihood_ratio': 'bpd − bpd_background'}
  fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 3.6),
                           dpi=100, squeeze=False)
  for ax, key in zip(axes[0], keys):
    values = {name: np.asarray(h[key]) for name, h in
              result['histograms'].items()}
    # The x range covers the in-distribution scores and 3 of their spreads
    # beyond; farther scores pile up in the edge bins (they are separated
    # anyway), so the overlap region stays readable.
    inside = values['in-distribution test']
    q_low, q_high = np.quantile(inside, [0.005, 0.995])
    spread = max(q_high - q_low, 1e-6)
    low = max(min(np.quantile(v, 0.005) for v in values.values()),
              q_low - 3 * spread)
    high = q_high + 3 * spread
    edges = np.linspace(low, high, 60)
    for i, (name, v) in enumerate(values.items()):
      ax.hist(np.clip(v, low, high), bins=edges, density=True,
              histtype='stepfilled' if i == 0 else 'step',
              alpha=0.35 if i == 0 else 0.9, linewidth=1.2, label=name)
    ax.set_title(f'{titles[key]} (clipped to [{low:.3g}, {high:.3g}])',
                 fontsize=9)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
  axes[0][-1].legend(fontsize=6)
  fig.tight_layout()
  buffer = io.BytesIO()
  fig.savefig(buffer, format='png')
  plt.close(fig)
  atomic_files.atomic_write_bytes(path, buffer.getvalue())


def _cpu_flags_line():
  """The bf16 flags of /proc/cpuinfo (what matmul speed rests on)."""
  return (f'* CPU bf16 flags: {", ".join(_common.cpu_bf16_flags()) or "none"} '
          '(/proc/cpuinfo).')


def _auroc(set_result, key):
  metric = set_result['metrics'].get(key)
  return None if metric is None else metric['auroc']


def _cell(value):
  if value is None:
    return '–'
  text = f'{value:.3f}'
  return f'**{text}**' if value >= 0.9 else text


def _model_line(summary, what, empty='likelihood-ratio column empty'):
  if summary is None:
    return f'* {what}: none ({empty}).'
  parts = [f'dataset `{summary["dataset"]}`']
  if summary.get('perturbation'):
    rate, copies = summary['perturbation']
    if copies is None:  # bin/train --perturbation_rate: no fixed draws.
      parts[0] += (f' (`bin/train --perturbation_rate={rate:g}`: every '
                   'training batch drawn afresh with each pixel replaced by a '
                   'uniform level with that probability)')
    else:
      parts[0] += (f' (`bench/ood.py --write_perturbed`: the model\'s '
                   f'training split, {copies} draw{"s" if copies > 1 else ""} '
                   'with each pixel replaced by a uniform level with '
                   f'probability μ = {rate:g})')
  if summary['classes']:
    parts.append(f'classes {",".join(map(str, summary["classes"]))}')
  if summary['steps'] is not None:
    parts.append(f'{summary["steps"]:,} steps')
  if summary['cpu_seconds'] is not None:
    parts.append(f'{summary["cpu_seconds"]:,.0f} CPU-s of training')
  if summary['elapsed_seconds'] is not None:
    parts.append(f'{summary["elapsed_seconds"] / 60:.1f} min wall')
  if summary['test_bpd'] is not None:
    parts.append(f'test {summary["test_bpd"]:.4f} bits/dim (IW k='
                 f'{summary["test_num_samples"]})')
  return f'* {what}: ' + ', '.join(parts) + '.'


def _experiment_markdown(title, result, doc_path, figures_dir):
  bound = ('single-sample bound' if result['num_samples'] == 1 else
           f'importance-weighted bound, k = {result["num_samples"]}')
  shape = '×'.join(map(str, result['image_shape']))
  lines = [f'### {title} ({shape}, {result["num_levels"]} levels)', '']
  lines.append(_model_line(result['model'], 'Model'))
  lines.append(_model_line(result['background'], 'Background model'))
  lines.append(_model_line(result.get('complexity_model'),
                           'Generic model of S (flowpp)',
                           'S (flowpp) column empty'))
  lines.append(
      f'* In-distribution: {result["num_test_images"]} test images, mean '
      f'{result["test_mean_bpd"]:.3f} bits/dim ({bound}; PNG '
      f'{result["test_mean_png_bpd"]:.2f} bits/dim'
      + (f'; our code length under the generic model '
         f'{result["test_mean_flowpp_bpd"]:.3f} bits/dim'
         if 'test_mean_flowpp_bpd' in result else '')
      + (f'; background model {result["test_mean_background_bpd"]:.3f} '
         'bits/dim' if 'test_mean_background_bpd' in result else '') +
      '). Typicality: Ĥ = '
      f'{result["entropy_bpd"]:.3f} from {result["reference_images"][0]} '
      f'training images, bootstrap from {result["reference_images"][1]} '
      f'validation images (mean {result["validation_mean_bpd"]:.3f}).')
  lines.append('')
  flowpp = 'test_mean_flowpp_bpd' in result
  background = 'test_mean_background_bpd' in result
  headers = (['OOD set', 'n', 'mean bpd'] +
             (['background bpd'] if background else []) + ['PNG bpd'] +
             (['flowpp L/D'] if flowpp else []) + [h for _, h in SCORES])
  rows = []
  for s in result['sets']:
    rows.append([s['name'], s['num_images'], f'{s["mean_bpd"]:.3f}'] +
                ([f'{s["mean_background_bpd"]:.3f}'] if background else []) +
                [f'{s["mean_png_bpd"]:.2f}'] +
                ([f'{s["mean_flowpp_bpd"]:.3f}'] if flowpp else []) +
                [_cell(_auroc(s, k)) for k, _ in SCORES])
  lines.append(_common.markdown_table(headers, rows))
  if result.get('figure'):
    figure = os.path.join(figures_dir, result['figure'])
    lines += ['', f'![{title}: score histograms]'
              f'({_common.relative_to_doc(figure, doc_path)})']
  env = result['env']
  lines += [''] + _common.environment_lines(env, result['command']) + [
      result.get('cpu_flags', _cpu_flags_line()),
      f'* Scoring time: {result["seconds"]:.0f} s (worker, including '
      'TensorFlow start-up and the typicality reference).']
  return lines


def _targets(results):
  rows = []
  failures = []
  for key, _, _, _, _ in EXPERIMENTS:
    result = results.get(key)
    if not result:
      continue
    for s in result['sets']:
      raw = _auroc(s, 'bpd')
      if raw is not None and raw < 0.5:
        failures.append(f'{key}: {s["name"]} ({raw:.3f})')
  rows.append(['raw-likelihood failure (AUROC < 0.5) on at least one set',
               ('**reproduced**: ' + '; '.join(failures)) if failures else
               'not reproduced'])
  for key, title, _, _, _ in EXPERIMENTS:
    result = results.get(key)
    if not result:
      rows.append([f'{title}: S or LLR ≥ 0.9 on every set', 'not run'])
      continue
    misses = []
    for s in result['sets']:
      best = max([v for v in map(lambda k: _auroc(s, k), CORRECTED)
                  if v is not None], default=None)
      if best is None or best < 0.9:
        misses.append(f'{s["name"]} (best {best:.3f})' if best is not None
                      else s['name'])
    rows.append([f'{title}: S or LLR ≥ 0.9 on every set',
                 '**met**' if not misses else 'not met: ' + '; '.join(misses)])
  return _common.markdown_table(['target', 'result'], rows, align=['l', 'l'])


def report(results, doc_path, figures_dir):
  md = [
      '## Out-of-distribution detection', '',
      'Per-image AUROC of telling each OOD set (positives) from the model\'s '
      'in-distribution test images with `tfp_flowpp.scoring`; every score '
      'reads "higher = more anomalous", so 0.5 is chance and below 0.5 the '
      'score ranks the OOD set as *more* in-distribution. Bold: ≥ 0.9. '
      '*raw bpd*: the bound in bits/dim; *typicality M=1*: |bpd − Ĥ| '
      '(Nalisnick et al. 2019); *M=10*: the same statistic of disjoint '
      'random batches of 10 images (one value per batch); *S*: bpd − '
      'L(x)/D with L the PNG / WebP-lossless file length (Serrà et al. '
      '2020; Pillow), or *S (flowpp)* with L our own bits-back code length '
      'of the image under a generic model (`compression.Codec.code_lengths`: '
      'each image coded alone, overhead included) trained on photo patches '
      '(`bench/ood.py --write_patches`), none of which is an OOD set; *LLR*: bpd − bpd of the background model, i.e. '
      '−LLR/(D ln 2) (Ren et al. 2019). *mean bpd* / *background bpd* / '
      '*PNG bpd*: the set\'s mean bound under the model and under the '
      'background model, and its PNG length per dimension. AUPR for every cell is in '
      '`ood_results.json`.', '']
  md += [
      'Background models are trained with the model\'s own flag file on '
      'pixel-perturbed training images (each pixel replaced by a uniform '
      'random level with probability μ; Ren et al. use μ ∈ [0.1, 0.3]): '
      'either `bin/train --perturbation_rate=μ`, which perturbs every batch '
      'afresh, or fixed draws written by `bench/ood.py --write_perturbed=RUN '
      '--out=FILE.npz` and trained through `bin/train --dataset=npz:FILE`; '
      'each background line says which. The '
      'bench fixes μ = 0.2 in advance rather than '
      'tuning it on the OOD sets.', '']
  for key, title, _, _, _ in EXPERIMENTS:
    if key in results:
      md += _experiment_markdown(title, results[key], doc_path,
                                 figures_dir) + ['']
  if 'fashion_mnist' not in results:
    md += [
        '### Fashion-MNIST (not run yet)', '',
        'Needs trained models; with a Fashion-MNIST run in `FMNIST_RUN`:', '',
        '```sh',
        'bin/train --flagfile=configs/fashion_mnist_flowpp.flags '
        '--classes=0,1,2,3,4,5,6,7,8 --workdir=HELDOUT_RUN',
        'bin/train --flagfile=configs/fashion_mnist_flowpp.flags '
        '--perturbation_rate=0.2 --workdir=BACKGROUND_RUN',
        'python bench/ood.py --workdir=FMNIST_RUN '
        '--background_workdir=BACKGROUND_RUN --heldout_workdir=HELDOUT_RUN',
        '```', '',
        '(Train the background with the same flags as FMNIST_RUN; '
        '`--heldout_background_workdir` takes a background of HELDOUT_RUN. '
        'Scoring reads 2,000 test images, each OOD set at the same size and '
        '2 × 2,000 reference images.)', '']
  md += ['### Targets', '', _targets(results)]
  return '\n'.join(md)


def text_report(results):
  out = []
  for key, title, _, _, _ in EXPERIMENTS:
    result = results.get(key)
    if not result:
      continue
    out.append(f'{title} ({key}): test mean bpd {result["test_mean_bpd"]:.3f}')
    rows = [[s['name'][:44], f'{s["mean_bpd"]:.3f}'] +
            [_common.fmt(_auroc(s, k)) for k, _ in SCORES]
            for s in result['sets']]
    out.append(_common.text_table(['OOD set', 'mean bpd'] +
                                  [h for _, h in SCORES], rows))
    out.append('')
  return '\n'.join(out)


def main(argv):
  if _common.run_as_worker(argv, worker_main):
    return 0
  parser = _common.base_parser(
      __doc__.split('\n\n')[0], 'ood',
      'Smoke run on tests/data/v0_1_tiny_workdir (4x4 digits), 64 images per '
      'set; no doc unless --output_doc.')
  for _, title, flag, background_flag, _ in EXPERIMENTS:
    parser.add_argument(f'--{flag}', default=None, help=f'Workdir of the '
                        f'{title}.')
    parser.add_argument(f'--{background_flag}', default=None,
                        help=f'Background model of --{flag}.')
  for _, title, flag, _, _ in EXPERIMENTS:
    parser.add_argument(f'--{complexity_flag(flag)}', default=None,
                        help=f'Generic model of --{flag} for S (flowpp): '
                        'our code length L(x) (a run of the same image shape '
                        'and levels, e.g. trained on --write_patches).')
  parser.add_argument('--max_images', type=int, default=None,
                      help='Test images (and images per OOD set): a seeded '
                      'random subset (default 2000; 64 with --quick).')
  parser.add_argument('--reference_images', type=int, default=None,
                      help='Training and validation images of the '
                      'typicality reference (default 2000; 128 --quick).')
  parser.add_argument('--num_samples', type=int, default=1,
                      help='1: score with the single-sample bound; k > 1: '
                      'with the importance-weighted bound of k samples.')
  parser.add_argument('--batch_size', type=int, default=256)
  parser.add_argument('--seed', type=int, default=0)
  _common.add_figures_dir_flag(parser, 'ood_results.json and the figures')
  parser.add_argument('--write_perturbed', default=None,
                      help='Instead of scoring: write this run\'s training '
                      'split, pixel-perturbed, to --out (.npz).')
  parser.add_argument('--write_patches', action='store_true',
                      help='Instead of scoring: write generic photo patches '
                      '(--image_size, --num_levels, --count) to --out (.npz) '
                      'to train a --*complexity_workdir model on.')
  parser.add_argument('--image_size', type=int, default=8)
  parser.add_argument('--num_levels', type=int, default=17)
  parser.add_argument('--count', type=int, default=50000)
  parser.add_argument('--out', default=None)
  parser.add_argument('--mutation_rate', type=float, default=0.2)
  parser.add_argument('--copies', type=int, default=1)
  args = parser.parse_args(argv[1:])

  if args.write_perturbed:
    if not args.out or not args.out.endswith('.npz'):
      parser.error('--write_perturbed needs --out=FILE.npz')
    write_perturbed(args.write_perturbed, args.out, args.mutation_rate,
                    args.copies, args.seed)
    return 0
  if args.write_patches:
    if not args.out or not args.out.endswith('.npz'):
      parser.error('--write_patches needs --out=FILE.npz')
    write_patches(args.out, args.image_size, args.num_levels, args.count,
                  args.seed)
    return 0
  if args.quick and not args.digits_workdir:
    args.digits_workdir = GOLDEN
    args.digits_background_workdir = GOLDEN
    args.digits_complexity_workdir = GOLDEN
  if args.max_images is None:
    args.max_images = 64 if args.quick else 2000
  if args.reference_images is None:
    args.reference_images = 128 if args.quick else 2000
  selected = [e for e in EXPERIMENTS if getattr(args, e[2])]
  if not selected:
    parser.error('give at least one model workdir (--workdir, '
                 '--digits_workdir, ...) or --quick')

  doc = _common.output_doc(args)
  figures_dir = _common.figures_dir(args, 'bench_ood_')
  os.makedirs(figures_dir, exist_ok=True)
  results_path = os.path.join(figures_dir, 'ood_results.json')
  results = {}
  if os.path.exists(results_path) and not args.quick:
    with open(results_path) as f:
      results = json.load(f)

  load, busy = _common.wait_for_quiet(timeout=args.wait_for_quiet)
  env = _common.environment(load, busy)
  local = ('--output_doc', '--figures_dir') + tuple(
      f'--{flag}' for e in EXPERIMENTS
      for flag in (*e[2:4], complexity_flag(e[2])))
  for key, title, flag, background_flag, heldout in selected:
    spec = {
        'key': key, 'workdir': getattr(args, flag),
        'background_workdir': getattr(args, background_flag),
        'complexity_workdir': getattr(args, complexity_flag(flag)),
        'heldout': heldout, 'num_samples': args.num_samples,
        'batch_size': args.batch_size, 'seed': args.seed,
        'max_images': args.max_images,
        'reference_images': args.reference_images,
    }
    print(f'scoring {title} ({spec["workdir"]}) ...', flush=True)
    result = _common.run_worker(SCRIPT, spec, timeout=6 * 3600)
    result['env'] = env
    result['cpu_flags'] = _cpu_flags_line()
    command = _common.reproduce_command('ood.py', argv, local)
    result['command'] = command + f' --{flag}=RUN' + (
        f' --{background_flag}=BACKGROUND_RUN'
        if spec['background_workdir'] else '') + (
            f' --{complexity_flag(flag)}=GENERIC_RUN'
            if spec['complexity_workdir'] else '')
    figure = os.path.join(figures_dir, f'ood_{key}.png')
    _figure(result, figure)
    del result['histograms']  # Only for the figure; keeps the JSON small.
    result['figure'] = os.path.basename(figure)
    results[key] = result
  with open(results_path + '.tmp', 'w') as f:
    json.dump(results, f, indent=1)
  os.replace(results_path + '.tmp', results_path)
  print(text_report(results))
  if doc:
    _common.update_doc_section('ood', report(results, doc, figures_dir), doc)
    print(f'wrote the ood section of {doc}')
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv))
