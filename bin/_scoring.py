"""Shared plumbing of bin/evaluate and bin/score (not a tool).

Image-source flags and loading, the one-line errors when images do not fit
the model (naming the flag that fixes it), the typicality reference, scoring
passes with a progress bar, and plain-text tables.
"""

import dataclasses
import hashlib
import itertools
import json
import math
import os
import re
import sys
import time

from absl import flags
import numpy as np

SPLITS = ('train', 'validation', 'test', 'all')
FLAGS = flags.FLAGS


def define_source_flags(dataset_flag, prefix, what):
  """``--<dataset_flag>`` and ``--<prefix>{classes,num_bits,image_size,split}``."""
  flags.DEFINE_string(
      dataset_flag, None,
      f'{what}: any data source bin/train accepts (digits, idx:DIR, '
      'folder:DIR, npz:FILE or a TFDS name). Unset: the run\'s own data.')
  flags.DEFINE_list(
      f'{prefix}classes', None,
      f'{what}: integer labels to keep, comma-separated (default: the '
      'run\'s classes for its own data, every class otherwise).')
  flags.DEFINE_integer(
      f'{prefix}num_bits', None,
      f'{what}: reduce 8-bit images to 2**num_bits levels (as bin/train).',
      lower_bound=1, upper_bound=8)
  flags.DEFINE_integer(
      f'{prefix}image_size', None,
      f'{what}: center-crop and resize to image_size x image_size (as '
      'bin/train).', lower_bound=1)
  flags.DEFINE_enum(
      f'{prefix}split', None, list(SPLITS),
      f'{what}: split to score; "all" is every image of the source. '
      'Default: test for the run\'s own data, all for another source.')


def define_scoring_flags(num_samples_default):
  """Flags of the `ScoringConfig` (its help texts) and of the reference."""
  from tfp_flowpp.scoring import config as config_lib  # pylint: disable=g-import-not-at-top
  help_texts = {f.name: f.metadata['help']
                for f in dataclasses.fields(config_lib.ScoringConfig)}
  flags.DEFINE_integer('num_samples', num_samples_default,
                       help_texts['num_samples'], lower_bound=1)
  flags.DEFINE_enum('score_bound', 'single', list(config_lib.BOUNDS),
                    help_texts['score_bound'])
  flags.DEFINE_integer('batch_size', 256, help_texts['batch_size'],
                       lower_bound=1)
  flags.DEFINE_integer('seed', 0, help_texts['seed'], lower_bound=0)
  flags.DEFINE_list('codecs', list(config_lib.CODECS),
                    help_texts['codecs'] + ' Comma-separated; empty: none.')
  flags.DEFINE_integer(
      'max_images', 0, 'Score only the first N images of each set (0 = all).',
      lower_bound=0)
  flags.DEFINE_integer(
      'reference_images', 2000,
      'Training images for the typicality entropy estimate and validation '
      'images for its bootstrap (a seeded random subset of each; 0 = all).',
      lower_bound=0)
  flags.DEFINE_string(
      'background_workdir', None,
      'Workdir of a background model of the same images (e.g. trained on '
      'pixel-perturbed training images, Ren et al. 2019) for the '
      'likelihood-ratio score.')
  flags.DEFINE_string(
      'complexity_workdir', None,
      'Workdir of a generic model of the same images (trained on broad '
      'images of this shape and levels) whose real bits-back code length, '
      'each image coded alone by tfp_flowpp.compression, is L(x) of the '
      'complexity_flowpp score (bpd - L/D). Slower than the other scores '
      '(one image per coding pass); unconditional models only.')
  flags.DEFINE_string(
      'data_dir', None, 'TFDS data directory (default: the run\'s).')
  flags.DEFINE_bool(
      'resume', True,
      'Keep every finished batch of a scoring pass in WORKDIR/scoring/ and, '
      'when the same command finds the file of an interrupted pass, score '
      'only the rest (same numbers as an uninterrupted pass; the file is '
      'deleted when the pass completes). --noresume: start over and keep '
      'nothing.')


def scoring_config():
  from tfp_flowpp import scoring  # pylint: disable=g-import-not-at-top
  return scoring.ScoringConfig(
      num_samples=FLAGS.num_samples, score_bound=FLAGS.score_bound,
      batch_size=FLAGS.batch_size, seed=FLAGS.seed,
      codecs=tuple(c.strip() for c in FLAGS.codecs if c.strip()))


def load_background(model):
  """The background model of ``--background_workdir``, or None."""
  if not FLAGS.background_workdir:
    return None
  from tfp_flowpp import scoring  # pylint: disable=g-import-not-at-top
  from tfp_flowpp import training  # pylint: disable=g-import-not-at-top
  background, _, _ = training.restore_for_inference(FLAGS.background_workdir)
  try:
    scoring.check_background(model, background)
  except ValueError as e:
    raise ValueError(f'--background_workdir={FLAGS.background_workdir}: '
                     f'{e}') from None
  return background


def load_complexity_codec(model):
  """The `compression.Codec` of ``--complexity_workdir``, or None."""
  if not FLAGS.complexity_workdir:
    return None
  from tfp_flowpp.scoring import complexity  # pylint: disable=g-import-not-at-top
  workdir = FLAGS.complexity_workdir
  return complexity.load_codec(workdir, model,
                               name=f'--complexity_workdir={workdir}')


def make_scorer(model):
  """The `ImageScorer` of the scoring flags (background, complexity)."""
  from tfp_flowpp import scoring  # pylint: disable=g-import-not-at-top
  return scoring.ImageScorer(model, scoring_config(),
                             background=load_background(model),
                             complexity_codec=load_complexity_codec(model))


# Sources --------------------------------------------------------------------


@dataclasses.dataclass
class Source:
  """Images to score: an array (or batches), labels and paths if known."""

  name: str
  split: str
  images: object
  count: int
  image_shape: tuple
  num_levels: int
  labels: np.ndarray | None = None
  paths: np.ndarray | None = None
  own: bool = False
  identity: str = ''  # The data config, split and count: names its passes.

  @property
  def description(self):
    return f'{self.name} {self.split}'


_DATASETS = {}


def _load(config):
  from tfp_flowpp import data as data_lib  # pylint: disable=g-import-not-at-top
  if config not in _DATASETS:
    _DATASETS[config] = data_lib.load_dataset(config)
  return _DATASETS[config]


def _classes(values, flag):
  try:
    return tuple(int(v) for v in values)
  except ValueError:
    raise ValueError(f'--{flag} must be comma-separated integer labels, got '
                     f'{",".join(values)}.') from None


@dataclasses.dataclass(frozen=True)
class SourceOptions:
  """What `define_source_flags` asks for (None: not given)."""

  dataset: str | None = None
  classes: tuple | None = None
  num_bits: int | None = None
  image_size: int | None = None
  split: str | None = None
  data_dir: str | None = None
  prefix: str = ''


def source_options(dataset_flag='dataset', prefix=''):
  """The `SourceOptions` of one set of source flags."""
  classes = FLAGS[f'{prefix}classes'].value
  return SourceOptions(
      dataset=FLAGS[dataset_flag].value,
      classes=None if classes is None else _classes(classes,
                                                    f'{prefix}classes'),
      num_bits=FLAGS[f'{prefix}num_bits'].value,
      image_size=FLAGS[f'{prefix}image_size'].value,
      split=FLAGS[f'{prefix}split'].value,
      data_dir=FLAGS.data_dir or None,
      prefix=prefix)


def _source_config(configs, options, split):
  """The `DataConfig` of a source: the run's, or a new one, plus overrides."""
  from tfp_flowpp import data as data_lib  # pylint: disable=g-import-not-at-top
  own = data_lib.DataConfig(**configs['data'])
  if options.dataset is None:
    values = dataclasses.asdict(own)
  else:
    values = {'dataset': options.dataset, 'data_dir': own.data_dir,
              'seed': own.seed}
    if split == 'all':  # Every image in the (official) train/test splits.
      values.update(validation_size=0, test_size=0)
  for name in ('classes', 'num_bits', 'image_size', 'data_dir'):
    if getattr(options, name) is not None:
      values[name] = getattr(options, name)
  config = data_lib.DataConfig(**values)
  return config, config == own


def _concatenated(parts):
  if any(p is None for p in parts):
    return None
  return np.concatenate(parts)


def _take_batches(ds, splits, batch_size, limit):
  """Batches of ``splits`` in order, at most ``limit`` images (0 = all)."""
  batches = itertools.chain.from_iterable(
      ds.eval_batches(s, batch_size) for s in splits)
  if not limit:
    return batches

  def limited():
    left = limit
    for batch in batches:
      batch = batch.numpy()[:left]
      left -= len(batch)
      yield batch
      if not left:
        return

  return limited()


def load_source(configs, options, max_images=0, batch_size=256):
  """Loads the images a tool scores.

  Args:
    configs: the run's config.json dict.
    options: `SourceOptions`; an unset dataset means the run's own data,
      whose split defaults to test (another source's to all).
    max_images: keep only the first N images (0 = all).
    batch_size: batch size of a streaming source.

  Returns:
    A `Source`.
  """
  split = options.split or ('test' if options.dataset is None else 'all')
  config, own = _source_config(configs, options, split)
  ds = _load(config)
  splits = ('train', 'validation', 'test') if split == 'all' else (split,)
  count = sum(ds.num_examples[s] for s in splits)
  if max_images:
    count = min(count, max_images)
  if not count:
    raise ValueError(f'{ds.name} {split} has no images; pick another '
                     f'--{options.prefix}split.')
  identity = json.dumps([dataclasses.asdict(config), split, count],
                        sort_keys=True, default=str)
  source = Source(name=ds.name, split=split, images=None, count=count,
                  image_shape=ds.image_shape, num_levels=ds.num_levels,
                  own=own, identity=identity)
  if ds.streaming:
    source.images = _take_batches(ds, splits, batch_size, count)
    return source
  source.images = np.concatenate([ds.arrays(s) for s in splits])[:count]
  labels = _concatenated([ds.labels(s) for s in splits])
  paths = _concatenated([ds.paths(s) for s in splits])
  source.labels = None if labels is None else labels[:count]
  source.paths = None if paths is None else paths[:count]
  return source


def check_matches(source, model, prefix='', num_bits_given=False):
  """One-line error naming the flag that fixes a shape or level mismatch."""
  got = 'x'.join(map(str, source.image_shape))
  want = 'x'.join(map(str, model.image_shape))
  (h, w, c), (mh, mw, mc) = source.image_shape, model.image_shape
  what = f'{source.description} images'
  if c != mc:
    raise ValueError(f'{what} are {got} but the model is {want}: no flag '
                     f'converts {c} to {mc} channels; convert the images '
                     f'first (e.g. with Pillow) and score them as '
                     f'folder:DIR or npz:FILE.')
  if (h, w) != (mh, mw):
    fix = (f'pass --{prefix}image_size={mh}' if mh == mw else
           f'no flag resizes to a non-square {mh}x{mw}; resize the images '
           f'first')
    raise ValueError(f'{what} are {got} but the model is {want}: {fix}.')
  levels, model_levels = source.num_levels, model.num_levels
  if levels != model_levels:
    bits = math.log2(model_levels)
    if levels == 256 and bits.is_integer() and model_levels < 256:
      fix = f'pass --{prefix}num_bits={int(bits)}'
    elif levels < model_levels and num_bits_given:
      fix = f'drop --{prefix}num_bits'
    else:
      fix = (f'no flag maps {levels} levels to {model_levels}; rescale the '
             f'pixel values to [0, {model_levels}) first and score them as '
             f'npz:FILE (np.savez(FILE, images=..., num_levels='
             f'{model_levels}))')
    raise ValueError(f'{what} have {levels} levels but the model has '
                     f'{model_levels}: {fix}.')


# Scoring passes ---------------------------------------------------------------


def with_progress(fn, total, every=10., initial=0):
  """Runs ``fn(callback)`` with an images/s progress bar; (result, seconds).

  ``initial`` images are already done (a resumed pass): they count towards
  the bar but not towards the rate.
  """
  from tfp_flowpp.training import progress  # pylint: disable=g-import-not-at-top
  bar = progress.ProgressBar(total, start=initial, unit='images')
  start = time.time()
  last = [0.]

  def callback(done):
    now = time.time()
    if done <= initial:
      return
    if bar.interactive or done >= total or now - last[0] >= every:
      bar.update(done, **{'img/s': (done - initial) / max(now - start, 1e-9)})
      last[0] = now

  result = fn(callback)
  bar.close()
  return result, time.time() - start


def _reference_images(ds, split, limit, seed, batch_size):
  """A seeded random subset (source order) of a split, or its first images."""
  count = ds.num_examples[split]
  if ds.streaming:
    n = min(count, limit) if limit else count
    return _take_batches(ds, (split,), batch_size, n), n
  images = ds.arrays(split)
  if limit and limit < len(images):
    keep = np.sort(np.random.default_rng([seed, 7]).choice(
        len(images), limit, replace=False))
    images = images[keep]
  return images, len(images)


def fit_typicality(scorer, configs, reference_images, workdir=None):
  """The run's typicality reference: (TypicalityTest, note).

  Ĥ comes from ``reference_images`` training images of the run (a subset
  seeded by the scoring seed; 0 = all), the bootstrap from as many of its
  validation images (its training images when it has no validation split).
  With a ``workdir`` (`resume_workdir`) both passes resume.
  """
  from tfp_flowpp import data as data_lib  # pylint: disable=g-import-not-at-top
  ds = _load(data_lib.DataConfig(**configs['data']))
  seed, batch_size = scorer.config.seed, scorer.config.batch_size
  train, num_train = _reference_images(ds, 'train', reference_images, seed,
                                       batch_size)
  held_split = 'validation' if ds.num_examples['validation'] else 'train'
  held, num_held = _reference_images(ds, held_split, reference_images, seed,
                                     batch_size)
  held_name = ('validation' if held_split == 'validation' else
               'training (the run has no validation split)')
  note = (f'entropy Ĥ from {num_train} training images, bootstrap from '
          f'{num_held} {held_name} images')
  print(f'Typicality reference: {note}.', flush=True)
  paths = tuple(
      progress_file(workdir, scorer, f'{ds.name}-typicality-{role}',
                    json.dumps(
          [dataclasses.asdict(ds.config), role, split, count,
           reference_images], sort_keys=True, default=str))
      for role, split, count in (('reference', 'train', num_train),
                                 ('bootstrap', held_split, num_held)))
  total = num_train + num_held
  stored = _stored_images(scorer, paths)
  if stored:
    print(f'Resuming the typicality reference: {stored} of {total} images '
          'already scored.', flush=True)
  try:
    (test, _, _), _ = with_progress(
        lambda cb: scorer.fit_typicality(train, held, callback=cb,
                                         progress_files=paths),
        total, initial=stored)
  except KeyboardInterrupt:
    if any(p and os.path.exists(p) for p in paths):
      print(f'\nInterrupted: the scores of {_stored_images(scorer, paths)} '
            f'of the {total} typicality reference images are kept in '
            f'{os.path.dirname(paths[0])}. Re-run the same command to '
            'resume.', file=sys.stderr)
    raise
  _remove_empty_directory(paths[0])
  return test, note


def output_columns(source, columns):
  """The table ``--output`` writes: index, label, path (when known), columns."""
  table = {'index': np.arange(source.count)}
  if source.labels is not None:
    table['label'] = source.labels
  if source.paths is not None:
    table['path'] = source.paths
  table.update(columns)
  return table


def score(scorer, source, typicality, workdir=None):
  """All columns for ``source`` with a progress bar: (columns, seconds).

  With a ``workdir`` (`resume_workdir`) the pass resumes.
  """
  config = scorer.config
  bounds = ['single-sample bound']
  if config.num_samples > 1:
    bounds.append(f'IW bound k={config.num_samples}')
  if scorer.background is not None:
    bounds.append('background')
  if scorer.complexity_codec is not None:
    bounds.append('complexity-model code lengths')
  print(f'Scoring {source.count} images of {source.description} '
        f'({", ".join(bounds)}) ...', flush=True)
  path = progress_file(workdir, scorer, f'{source.name}-{source.split}',
                       source.identity)
  initial = _stored_images(scorer, [path])
  if initial:
    print(f'Resuming an interrupted pass: {initial} of {source.count} '
          f'images already scored ({path}).', flush=True)
  try:
    result = with_progress(
        lambda cb: scorer.score(source.images, typicality, callback=cb,
                                progress_file=path),
        source.count, initial=initial)
  except KeyboardInterrupt:
    if path and os.path.exists(path):
      kept = _stored_images(scorer, [path])
      print(f'\nInterrupted: the scores of {kept} of {source.count} images '
            f'are kept in {path}. Re-run the same command to resume.',
            file=sys.stderr)
    raise
  _remove_empty_directory(path)
  return result


def _stored_images(scorer, paths):
  """Images the `PartialScores` files at ``paths`` hold (checked)."""
  from tfp_flowpp import scoring  # pylint: disable=g-import-not-at-top
  return sum(scoring.PartialScores.open(p, scorer.key).num_images
             for p in paths if p and os.path.exists(p))


def _remove_empty_directory(path):
  """After a completed pass (its file deleted), drops an empty scoring/."""
  if path:
    try:
      os.rmdir(os.path.dirname(path))
    except OSError:
      pass


def resume_workdir():
  """The workdir scoring passes keep their batches in: None if --noresume."""
  return FLAGS.workdir if FLAGS.resume else None


def progress_file(workdir, scorer, name, identity):
  """Where a pass of ``scorer`` keeps its finished batches.

  ``WORKDIR/scoring/<name>-<digest>.partial.npz``, the digest over the
  scorer's key and ``identity`` (what the pass scores: data config, split,
  count); None without a ``workdir`` or when it cannot be written (then
  said on stderr).
  """
  if workdir is None:
    return None
  directory = os.path.join(workdir, 'scoring')
  digest = hashlib.sha256(
      f'{scorer.key}\n{identity}'.encode()).hexdigest()[:16]
  name = re.sub(r'[^A-Za-z0-9_.-]+', '_', name)
  writable = directory if os.path.isdir(directory) else workdir
  if not os.access(writable, os.W_OK):
    print(f'Warning: cannot keep partial scores ({writable} is not '
          'writable); an interrupted pass will start over.', file=sys.stderr)
    return None
  return os.path.join(directory, f'{name}-{digest}.partial.npz')


# Tables -----------------------------------------------------------------------


def fmt(value):
  if not np.isfinite(value):
    return str(value)
  return f'{value:,.0f}' if abs(value) >= 1000 else f'{value:.4f}'


def text_table(headers, rows):
  cells = [list(map(str, headers))] + [[str(c) for c in r] for r in rows]
  widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
  lines = []
  for j, row in enumerate(cells):
    lines.append('  '.join(
        c.ljust(w) if i == 0 else c.rjust(w)
        for i, (c, w) in enumerate(zip(row, widths))))
    if j == 0:
      lines.append('  '.join('-' * w for w in widths))
  return '\n'.join(lines)


SUMMARY_HEADERS = ('column', 'mean', 'std', 'min', '5%', '25%', '50%', '75%',
                   '95%', 'max')


def summary_rows(columns):
  """Mean, std and quantiles of every column (one row each)."""
  rows = []
  for name, values in columns.items():
    quantiles = np.quantile(values, [0., .05, .25, .5, .75, .95, 1.])
    rows.append([name, fmt(values.mean()), fmt(values.std())] +
                [fmt(q) for q in quantiles])
  return rows
