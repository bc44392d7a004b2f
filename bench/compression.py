#!/usr/bin/env python3
"""Lossless compression with trained models against classical codecs.

    python bench/compression.py --digits_workdir=RUN
        [--fashion_workdir=/work/runs/fmnist_ref --fashion_images=1000]
    python bench/compression.py --quick          # smoke run (tiny model)

For each data set (the digits test split with the quickstart model; the
first ``--fashion_images`` Fashion-MNIST test images with the Fashion-MNIST
Flow++ model) this measures, on the same images:

* the actual bits/dim of the compressed file (file bytes × 8 / (N·D)) from
  `tfp_flowpp.compression` (local bits-back coding), with its parts: header,
  initial bits (the raw-coded bootstrap images), the bits-back images, and
  the model's single-sample bound at the noise that was coded;
* the model's single-sample bound (fresh noise, seed 0) and its
  importance-weighted bound (k = 64);
* PNG (Pillow, ``optimize=True``), WebP lossless (Pillow, ``method=6``),
  lzma (preset 9 | extreme) and bz2 (level 9) of the raw uint8 array, per
  image (sum of one file per image) and for the whole set (one file);
* compression and decompression images/s (steady state, after a short
  warm-up that traces the graphs) — compression and decompression each run
  in their own fresh process, and the decompressed images are compared with
  the originals there;
* the initial-bits overhead and how it amortises over the number of images.

Models, data and the coded noise are deterministic, so a re-run gives the
same file sizes; timings depend on the machine's load, recorded with them.
"""

import bz2
import io
import json
import lzma
import math
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # pylint: disable=g-import-not-at-top,wrong-import-position

SCRIPT = os.path.abspath(__file__)
QUICK_WORKDIR = os.path.join(_common.ROOT, 'tests', 'data',
                             'v0_1_tiny_workdir')
AMORTISATION_IMAGES = (100, 1000, 10000, 100000)
TARGET_MARGIN = 0.02
TARGET_MIN_IMAGES = 1000


# Worker side ----------------------------------------------------------------------


def _images(spec):
  from tfp_flowpp import data as data_lib  # pylint: disable=g-import-not-at-top
  from tfp_flowpp import training  # pylint: disable=g-import-not-at-top
  configs = training.Workdir(spec['workdir']).read_configs()
  dataset = data_lib.load_dataset(data_lib.DataConfig(**configs['data']))
  images = dataset.arrays(spec['split'])
  return images[:spec['num_images']] if spec['num_images'] else images


def _bounds_worker(spec):
  """Single-sample and importance-weighted bounds (EMA weights, float32)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tfp_flowpp import training  # pylint: disable=g-import-not-at-top
  model, _, step = training.restore_for_inference(spec['workdir'])
  images = _images(spec)
  batch = spec['batch_size']
  single = tf.function(lambda x, s: model.bits_per_dim(x, seed=s))
  iw = tf.function(lambda x, s: model.nats_to_bits_per_dim(
      model.importance_weighted_log_prob(x, spec['iw_samples'], seed=s)))
  out = {'single': [], 'iw': []}
  start = time.time()
  for i in range(0, len(images), batch):
    x = tf.constant(images[i:i + batch], tf.int32)
    seed = tf.constant([0, i], tf.int32)
    out['single'].append(single(x, seed).numpy())
    out['iw'].append(iw(x, seed).numpy())
  _common.emit_result({
      'step': step,
      'num_images': len(images),
      'single_bpd': float(np.mean(np.concatenate(out['single']))),
      'iw_bpd': float(np.mean(np.concatenate(out['iw']))),
      'seconds': time.time() - start,
  })


def _compress_worker(spec):
  from tfp_flowpp import compression  # pylint: disable=g-import-not-at-top
  from tfp_flowpp import training  # pylint: disable=g-import-not-at-top
  model, _, _ = training.restore_for_inference(spec['workdir'])
  model_config = training.Workdir(spec['workdir']).model_config()
  images = _images(spec)
  codec = compression.Codec(model, model_config, compression.CodingConfig(
      **spec['coding']))
  start = time.time()
  codec.compress(images[:spec['warmup_images']])  # Traces the graphs.
  setup = time.time() - start
  data, stats = codec.compress(images)
  compression.write_atomic(spec['path'], data)
  header = compression.read_header(data)
  _common.emit_result({
      'bootstrap_codec': ('WebP lossless' if header.bootstrap_codec else
                          'raw (log2 L bits per pixel)'),
      'setup_seconds': setup,
      'seconds': stats.seconds,
      'images_per_second': stats.images_per_second,
      'file_bytes': stats.file_bytes,
      'header_bytes': stats.header_bytes,
      'bootstrap_images': stats.bootstrap_images,
      'bootstrap_bits': stats.bootstrap_bits,
      'coded_bits': stats.coded_bits,
      'bound_bits': stats.bound_bits,
      'coded_images': stats.coded_images,
      'num_dims': stats.num_dims,
      'num_images': stats.num_images,
      'bits_per_dim': stats.bits_per_dim,
      'min_stream_bits': stats.min_stream_bits,
  })


def _decompress_worker(spec):
  import numpy as np  # pylint: disable=g-import-not-at-top
  from tfp_flowpp import compression  # pylint: disable=g-import-not-at-top
  from tfp_flowpp import training  # pylint: disable=g-import-not-at-top
  from tfp_flowpp.compression import environment  # pylint: disable=g-import-not-at-top
  with open(spec['path'], 'rb') as f:
    data = f.read()
  header = compression.read_header(data)
  environment.configure(header.threads)
  model, _, _ = training.restore_for_inference(spec['workdir'])
  model_config = training.Workdir(spec['workdir']).model_config()
  codec = compression.Codec(
      model, model_config,
      compression.CodingConfig(grid_bits=header.grid_bits,
                               noise_bits=header.noise_bits,
                               max_batch_size=header.max_batch_size))
  images = _images(spec)
  # Warm-up: a small file with the same coding settings traces the graphs.
  start = time.time()
  warm, _ = codec.compress(images[:spec['warmup_images']])
  codec.decompress(warm)
  setup = time.time() - start
  restored, stats = codec.decompress(data)
  same = np.all(restored.reshape(len(restored), -1) == images.reshape(
      len(images), -1), axis=1)
  _common.emit_result({
      'setup_seconds': setup,
      'seconds': stats.seconds,
      'images_per_second': stats.images_per_second,
      'bit_exact_images': int(same.sum()),
      'num_images': len(images),
  })


def worker_main(spec):
  {'bounds': _bounds_worker, 'compress': _compress_worker,
   'decompress': _decompress_worker}[spec['kind']](spec)


# Classical codecs -------------------------------------------------------------------


def _png(image):
  from PIL import Image  # pylint: disable=g-import-not-at-top
  buffer = io.BytesIO()
  _pil(image).save(buffer, format='PNG', optimize=True)
  return len(buffer.getvalue())


def _webp(image):
  buffer = io.BytesIO()
  _pil(image).save(buffer, format='WEBP', lossless=True, quality=100,
                   method=6)
  return len(buffer.getvalue())


def _pil(image):
  from PIL import Image  # pylint: disable=g-import-not-at-top
  if image.shape[-1] == 1:
    return Image.fromarray(image[..., 0], mode='L')
  return Image.fromarray(image, mode='RGB')


def _lzma(array):
  return len(lzma.compress(array.tobytes(), preset=9 | lzma.PRESET_EXTREME))


def _bz2(array):
  return len(bz2.compress(array.tobytes(), 9))


def _mosaic(images):
  """The images tiled into one near-square image (WebP allows ≤ 16,383 px).

  The columns are the divisor of N that makes the mosaic closest to square,
  so no filler tile is needed; when N has no divisor within 4:1 (N prime,
  say), the last row is filled with black tiles (a few bytes, counted).
  """
  import numpy as np  # pylint: disable=g-import-not-at-top
  n, h, w, c = images.shape
  cols = min((d for d in range(1, n + 1) if n % d == 0),
             key=lambda d: abs(np.log(d * w / (n // d * h))))
  if max(cols * w / (n // cols * h), n // cols * h / (cols * w)) > 4:
    cols = int(np.ceil(np.sqrt(n * h / w)))
  rows = -(-n // cols)
  padded = np.zeros((rows * cols, h, w, c), images.dtype)
  padded[:n] = images
  mosaic = padded.reshape(rows, cols, h, w, c).transpose(0, 2, 1, 3, 4)
  return np.ascontiguousarray(mosaic.reshape(rows * h, cols * w, c))


def classical_codecs(images):
  """{codec: (per-image total bytes, whole-set bytes)} on uint8 images."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  mosaic = _mosaic(images)
  out = {}
  for name, fn, whole in (('PNG (optimize)', _png, _png),
                          ('WebP lossless', _webp, _webp), ('lzma', _lzma,
                                                            _lzma),
                          ('bz2', _bz2, _bz2)):
    per_image = sum(fn(np.ascontiguousarray(im)) for im in images)
    whole_set = whole(mosaic if fn in (_png, _webp) else images)
    out[name] = (per_image, whole_set)
  return out


# Driver ------------------------------------------------------------------------------


def _dataset_specs(args):
  specs = []
  if args.quick:
    specs.append(('quick', 'digits (tiny model, 4×4)', QUICK_WORKDIR, 'test',
                  60))
  else:
    if args.digits_workdir:
      specs.append(('digits', 'digits (quickstart)', args.digits_workdir,
                    'test', 0))
    if args.fashion_workdir:
      specs.append(('fashion_mnist', 'Fashion-MNIST (Flow++)',
                    args.fashion_workdir, 'test', args.fashion_images))
  if not specs:
    raise SystemExit('bench/compression.py: pass --digits_workdir and/or '
                     '--fashion_workdir (or --quick).')
  return specs


def run_dataset(key, label, workdir, split, num_images, args, tmp):
  import numpy as np  # pylint: disable=g-import-not-at-top
  print(f'== {label}: {workdir}', flush=True)
  base = dict(workdir=os.path.abspath(workdir), split=split,
              num_images=num_images)
  # Classical codecs on the very same images (loaded without TensorFlow's
  # models: the workers' images come from the same data config), first, so
  # that nothing fails after the long model runs.
  images = _images(base)
  classical = classical_codecs(images)
  coding = dict(grid_bits=args.grid_bits, noise_bits=args.noise_bits,
                max_batch_size=args.max_batch_size)
  path = os.path.join(tmp, f'{len(os.listdir(tmp))}.flowpp')
  warmup = 2 if args.quick else 24
  compressed = _common.run_worker(
      SCRIPT, dict(base, kind='compress', path=path, coding=coding,
                   warmup_images=warmup), timeout=24 * 3600)
  print(f'   compressed: {compressed["bits_per_dim"]:.4f} bits/dim, '
        f'{compressed["images_per_second"]:.1f} img/s', flush=True)
  decompressed = _common.run_worker(
      SCRIPT, dict(base, kind='decompress', path=path,
                   warmup_images=warmup), timeout=24 * 3600)
  print(f'   decompressed: {decompressed["bit_exact_images"]}/'
        f'{decompressed["num_images"]} bit-exact, '
        f'{decompressed["images_per_second"]:.1f} img/s', flush=True)
  bounds = _common.run_worker(
      SCRIPT, dict(base, kind='bounds', batch_size=args.bound_batch_size,
                   iw_samples=args.iw_samples), timeout=24 * 3600)
  print(f'   bounds: single {bounds["single_bpd"]:.4f}, IW '
        f'{bounds["iw_bpd"]:.4f} bits/dim', flush=True)
  return dict(key=key, label=label, workdir=workdir, num_images=len(images),
              image_shape=list(images.shape[1:]),
              num_levels=int(_num_levels(base)),
              compressed=compressed, decompressed=decompressed,
              bounds=bounds, classical=classical,
              raw_bits_per_dim=float(np.log2(_num_levels(base))))


def _num_levels(base):
  from tfp_flowpp import training  # pylint: disable=g-import-not-at-top
  return training.Workdir(base['workdir']).model_config().num_levels


def _bpd(num_bytes, n, dims):
  return 8. * num_bytes / (n * dims)


SECTION = 'compression'
FASHION_SECTION = 'compression_fashion_mnist'
_TITLE = '## Compression: local bits-back coding vs classical codecs'
_FASHION_PENDING = (
    '### Fashion-MNIST\n\nNot measured yet. `python bench/compression.py '
    '--fashion_workdir=/work/runs/fmnist_ref` writes this section (the first '
    '1,000 test images; `--fashion_images=0` for all 10,000) and leaves the '
    'digits section as it is.')


def _notes(env, command, args, load_after):
  md = _common.environment_lines(env, command, load_after)
  md.append(f"* CPU vector/bf16 flags: {env['cpu_flags']}.")
  md.append(
      f'* Coding: grid 2^-{args.grid_bits}, local noise 2^-{args.noise_bits} '
      f'(raised per element where a layer\'s slope is tiny), batches up to '
      f'{args.max_batch_size} images, constriction '
      f"{env['constriction']} ANS (32-bit words, 24-bit probabilities); "
      'the model runs in float64 with TensorFlow\'s deterministic ops; '
      'compression and decompression run in separate fresh processes.')
  md.append(
      f'* Bounds: the single-sample dequantization bound (one u ~ q(u|x), '
      f'seed 0) and the importance-weighted bound with k = {args.iw_samples}, '
      'float32 EMA weights, on the same images; "bound at coded u" is the '
      'single-sample bound at the noise the file actually carries.')
  md.append('* Models: digits = `bin/train --flagfile=configs/quickstart.flags` '
            '(600 steps, ~3 min on 2 cores); Fashion-MNIST = '
            '`configs/fashion_mnist_flowpp.flags` (the reference run).')
  md.append('* Classical codecs on the raw uint8 pixel levels: PNG (Pillow, '
            '`optimize=True`, 8-bit grayscale), WebP lossless (Pillow, '
            '`lossless=True, quality=100, method=6`), lzma (preset 9 | '
            'extreme), bz2 (level 9); "whole set" = one file for all images '
            '(the images tiled into one near-square mosaic for PNG/WebP).')
  return md


def _dataset_report(r, notes, args):
  """``(summary line, markdown)`` of one data set, with its targets."""
  c, d, b = r['compressed'], r['decompressed'], r['bounds']
  n, dims = r['num_images'], c['num_dims']
  bootstrap_extra = c['bootstrap_bits'] - (c['bound_bits'] / max(
      1, c['coded_images'])) * c['bootstrap_images']
  rows = [
      ['**tfp_flowpp local bits-back (file)**',
       f"**{c['bits_per_dim']:.4f}**", f"{c['file_bytes']:,}"],
      ['  of which bits-back images', f"{c['coded_bits'] / (n * dims):.4f}",
       f"{c['coded_bits'] / 8:,.0f}"],
      ['  of which initial bits (bootstrap images, no bits-back)',
       f"{c['bootstrap_bits'] / (n * dims):.4f}",
       f"{c['bootstrap_bits'] / 8:,.0f}"],
      ['  of which header', f"{_bpd(c['header_bytes'], n, dims):.4f}",
       f"{c['header_bytes']}"],
      ['bits-back images alone (coded bits / their dims)',
       f"{c['coded_bits'] / max(1, c['coded_images'] * dims):.4f}", ''],
      ['model bound at the coded u (same bits-back images)',
       f"{c['bound_bits'] / max(1, c['coded_images'] * dims):.4f}", ''],
      ['model single-sample bound (all images)', f"{b['single_bpd']:.4f}",
       ''],
      [f"model IW bound, k={args.iw_samples} (all images)",
       f"{b['iw_bpd']:.4f}", ''],
      ['raw (log2 L bits per pixel)', f"{r['raw_bits_per_dim']:.4f}", ''],
  ]
  best_classical = math.inf
  for name, (per_image, whole) in r['classical'].items():
    rows.append([f'{name}, per image', f'{_bpd(per_image, n, dims):.4f}',
                 f'{per_image:,}'])
    rows.append([f'{name}, whole set', f'{_bpd(whole, n, dims):.4f}',
                 f'{whole:,}'])
    best_classical = min(best_classical, _bpd(per_image, n, dims),
                         _bpd(whole, n, dims))
  h, w, ch = r['image_shape']
  md = [f"### {r['label']}: {n:,} test images, {h}×{w}×{ch}, "
        f"{r['num_levels']} levels", ''] + notes + [
            '', f"Model: `{os.path.basename(os.path.normpath(r['workdir']))}` "
            f"(step {b['step']}).", '']
  md.append(_common.markdown_table(['code', 'bits/dim', 'bytes'], rows))
  speed = [
      ['compress', f"{c['images_per_second']:.1f}",
       f"{c['seconds']:.1f}", f"{c['setup_seconds']:.1f}"],
      ['decompress', f"{d['images_per_second']:.1f}", f"{d['seconds']:.1f}",
       f"{d['setup_seconds']:.1f}"],
  ]
  md += ['', _common.markdown_table(
      ['direction', 'images/s', 'seconds', 'one-off warm-up s (tracing)'],
      speed)]
  # Amortisation of the initial bits: the bootstrap's excess over what the
  # same images would cost with bits-back, spread over N images.
  excess = max(0., bootstrap_extra)
  amort = [[f'{m:,}', f'{excess / (m * dims):.4f}',
            f"{(excess + 8 * c['header_bytes']) / (m * dims):.4f}"]
           for m in AMORTISATION_IMAGES]
  md += [
      '',
      f"Initial bits: a bits-back image draws bits from the stream before "
      f"it writes its own — here up to "
      f"{(c['bootstrap_bits'] - c['min_stream_bits']) / dims:.1f} bits per "
      f"dimension (the first image: the stream fell from "
      f"{c['bootstrap_bits']:,.0f} to {c['min_stream_bits']:,.0f} bits, "
      f"never to zero). The first {c['bootstrap_images']} images are "
      f"therefore coded without bits-back, with {c['bootstrap_codec']} "
      f"({c['bootstrap_bits']:,.0f} bits, "
      f"{c['bootstrap_bits'] / (c['bootstrap_images'] * dims):.3f} bits/dim)"
      f", so that the bits-back images have data to draw from; their cost "
      f"above the model's code length is {excess:,.0f} bits, which with the "
      f"{c['header_bytes']}-byte header amortises over the number of "
      f"images in a file as:", '',
      _common.markdown_table(
          ['images in the file', 'initial-bits overhead (bits/dim)',
           'with header (bits/dim)'], amort)]
  exact = d['bit_exact_images'] == d['num_images']
  margin = c['bits_per_dim'] - b['single_bpd']
  verdicts = [
      [f"actual ≤ single-sample bound + {TARGET_MARGIN}"
       + ('' if n >= TARGET_MIN_IMAGES else
          f' (target is for ≥ {TARGET_MIN_IMAGES:,} images; here {n})'),
       f"{c['bits_per_dim']:.4f} vs {b['single_bpd']:.4f} ({margin:+.4f})",
       '**met**' if margin <= TARGET_MARGIN else 'not met'],
      ['better than every classical codec',
       f"{c['bits_per_dim']:.4f} vs best {best_classical:.4f}",
       '**met**' if c['bits_per_dim'] < best_classical else 'not met'],
      ['bit-exact in a fresh process',
       f"{d['bit_exact_images']}/{d['num_images']} images",
       '**met**' if exact else 'NOT MET'],
  ]
  md += ['', f"#### Targets ({r['label']})", '',
         _common.markdown_table(['target', 'measured', 'verdict'], verdicts)]
  text = (f"{r['label']}: file {c['bits_per_dim']:.4f} bpd, single "
          f"{b['single_bpd']:.4f}, IW {b['iw_bpd']:.4f}, best classical "
          f"{best_classical:.4f}, bit-exact {d['bit_exact_images']}/"
          f"{d['num_images']}, {c['images_per_second']:.1f} / "
          f"{d['images_per_second']:.1f} img/s")
  return text, '\n'.join(md)


def report(results, command, env, args):
  """``(summary text, {doc section: markdown})``.

  Each data set has its own section (``compression`` for digits or the
  quick run, `FASHION_SECTION` for Fashion-MNIST), so measuring one leaves
  the other's numbers in the doc.
  """
  notes = _notes(env, command, args, results.get('load_after'))
  text, sections = [], {}
  for r in results['datasets']:
    line, md = _dataset_report(r, notes, args)
    text.append(line)
    if r['key'] == 'fashion_mnist':
      sections[FASHION_SECTION] = md
    else:
      sections[SECTION] = f'{_TITLE}\n\n{md}'
  return '\n'.join(text), sections


def _cpu_flags():
  text, _ = _common._cpuinfo()  # pylint: disable=protected-access
  for line in text.splitlines():
    if line.startswith('flags'):
      flags = line.split(':', 1)[1].split()
      chosen = sorted(f for f in flags if 'bf16' in f or f.startswith('amx'))
      return ', '.join(chosen) or 'no bf16/AMX flags'
  return 'unknown'


def main(argv):
  if _common.run_as_worker(argv, worker_main):
    return 0
  parser = _common.base_parser(
      __doc__.split('\n\n')[0], 'compression',
      'Smoke run on the tiny v0.1 test workdir (60 images); no doc unless '
      '--output_doc.')
  parser.add_argument('--digits_workdir', default=None,
                      help='Quickstart run (bin/train --flagfile=configs/'
                      'quickstart.flags).')
  parser.add_argument('--fashion_workdir', default=None,
                      help='Fashion-MNIST Flow++ run, e.g. '
                      '/work/runs/fmnist_ref.')
  parser.add_argument('--fashion_images', type=int, default=1000,
                      help='First N Fashion-MNIST test images (0 = all).')
  parser.add_argument('--iw_samples', type=int, default=64)
  parser.add_argument('--bound_batch_size', type=int, default=64)
  parser.add_argument('--grid_bits', type=int, default=None)
  parser.add_argument('--noise_bits', type=int, default=None)
  parser.add_argument('--max_batch_size', type=int, default=64)
  args = parser.parse_args(argv[1:])
  from tfp_flowpp import compression  # pylint: disable=g-import-not-at-top
  defaults = compression.CodingConfig()
  args.grid_bits = args.grid_bits or defaults.grid_bits
  args.noise_bits = args.noise_bits or defaults.noise_bits
  if args.quick:
    args.iw_samples = min(args.iw_samples, 4)
  load, busy = _common.wait_for_quiet(timeout=args.wait_for_quiet)
  env = _common.environment(load, busy)
  env['cpu_flags'] = _cpu_flags()
  from importlib import metadata  # pylint: disable=g-import-not-at-top
  env['constriction'] = metadata.version('constriction')
  command = _common.reproduce_command('compression.py', argv)
  results = {'datasets': []}
  with tempfile.TemporaryDirectory(prefix='bench_compression_') as tmp:
    for spec in _dataset_specs(args):
      results['datasets'].append(run_dataset(*spec, args, tmp))
  results['load_after'] = _common.load_average()
  text, sections = report(results, command, env, args)
  print(text)
  for markdown in sections.values():
    print(markdown)
  doc = _common.output_doc(args)
  if doc:
    for name, markdown in sections.items():
      _common.update_doc_section(name, markdown, doc)
      print(f'wrote the {name} section of {doc}')
    if SECTION in sections and FASHION_SECTION not in sections:
      existing = open(doc).read()
      if f'<!-- BEGIN {FASHION_SECTION} -->' not in existing:
        _common.update_doc_section(FASHION_SECTION, _FASHION_PENDING, doc)
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv))
