"""Shared helpers of the benchmark scripts (`speed.py`, `quality.py`).

* machine / software description and the load check for final runs;
* reading ``configs/NAME.flags`` through the bin/ tools' flag definitions;
* TFP's own `tfb.Glow` wrapped as a `DiscreteImageFlow` (same logit
  preprocessing, uniform dequantization and bits/dim as our models), as a
  `Trainer` ``model_fn``, and a parameter-count matcher for it;
* one-process-per-measurement workers that report a JSON line;
* markdown tables and independent, marker-delimited sections of
  ``docs/benchmarks.md``.
"""

import argparse
import datetime
import json
import math
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for _path in (ROOT, os.path.join(ROOT, 'bin')):
  if _path not in sys.path:
    sys.path.insert(0, _path)
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

DOC_PATH = os.path.join(ROOT, 'docs', 'benchmarks.md')
FIGURES_DIR = os.path.join(ROOT, 'docs', 'figures')
RESULT_PREFIX = 'BENCH_RESULT '

_DOC_SKELETON = """# Benchmarks

Measurements, not tests: `bench/speed.py` and `bench/quality.py` print the
tables below and rewrite their own section of this file (each script only
touches the section between its markers, so re-running one keeps the
other). Every section records the machine, the software versions, the date,
the load average before the run and the command that reproduces it.

<!-- BEGIN speed -->
(not run yet: `python bench/speed.py`)
<!-- END speed -->

<!-- BEGIN quality -->
(not run yet: `python bench/quality.py`)
<!-- END quality -->
"""

# Machine and software ---------------------------------------------------------


def _cpuinfo():
  """(text of /proc/cpuinfo, its first value of every key); empty if absent."""
  try:
    with open('/proc/cpuinfo') as f:
      text = f.read()
  except OSError:
    return '', {}
  fields = {}
  for line in text.splitlines():
    if ':' in line:
      key, value = (s.strip() for s in line.split(':', 1))
      fields.setdefault(key, value)
  return text, fields


def cpu_model():
  return _cpuinfo()[1].get('model name') or platform.processor() or 'unknown'


def cpu_flags_summary():
  """The widest vector ISA the CPU reports (what the float32 peak rests on)."""
  flags_set = set(_cpuinfo()[1].get('flags', '').split())
  for isa in ('avx512f', 'avx2', 'avx', 'sse4_2'):
    if isa in flags_set:
      return isa
  return ''


def cpu_bf16_flags():
  """The CPU's bfloat16 flags (amx_bf16, avx512_bf16), as `precision` reads."""
  from tfp_flowpp import precision  # pylint: disable=g-import-not-at-top
  return list(precision.cpu_bf16_flags())


def cpu_family_model():
  fields = _cpuinfo()[1]
  if not fields:
    return ''
  return (f"family {fields.get('cpu family', '?')} model "
          f"{fields.get('model', '?')}")


def load_average():
  return tuple(round(v, 2) for v in os.getloadavg())


def busy_processes():
  """Other pytest / bin/train processes (the load check for final runs)."""
  try:
    out = subprocess.run(['pgrep', '-af', 'pytest|bin/train'],
                         capture_output=True, text=True, check=False).stdout
  except OSError:
    return []
  own = {os.getpid(), os.getppid()}
  lines = []
  for line in out.splitlines():
    pid = int(line.split()[0])
    if pid not in own:
      lines.append(line.strip())
  return lines


def wait_for_quiet(max_load=0.5, timeout=0., poll=30., stream=sys.stdout):
  """Waits (up to ``timeout`` s) until the load is low; returns the state."""
  deadline = time.time() + timeout
  while True:
    load, busy = load_average(), busy_processes()
    if (load[0] < max_load and not busy) or time.time() >= deadline:
      return load, busy
    print(f'waiting for a quiet machine: load {load}, {len(busy)} other '
          'test/train processes', file=stream, flush=True)
    time.sleep(poll)


def git_revision():
  try:
    rev = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'],
                         cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout.strip()
    dirty = subprocess.run(['git', 'status', '--porcelain', '--',
                            'tfp_flowpp'], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.strip()
    return rev + (' + uncommitted library changes' if dirty else '')
  except (OSError, subprocess.CalledProcessError):
    return 'unknown'


def software_versions():
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_probability as tfp  # pylint: disable=g-import-not-at-top
  import tf_keras  # pylint: disable=g-import-not-at-top
  return {
      'python': platform.python_version(),
      'tensorflow': tf.__version__,
      'tensorflow_probability': tfp.__version__,
      'tf_keras': tf_keras.__version__,
      'numpy': np.__version__,
      'onednn': os.environ.get('TF_ENABLE_ONEDNN_OPTS', 'default (on)'),
  }


def environment(load=None, busy=None):
  """Everything a results section records about the run."""
  return {
      'date': datetime.datetime.now(datetime.timezone.utc).strftime(
          '%Y-%m-%d %H:%M UTC'),
      'cpu': cpu_model(),
      'cpu_id': cpu_family_model(),
      'isa': cpu_flags_summary(),
      'bf16': cpu_bf16_flags(),
      'cores': os.cpu_count(),
      'memory_gib': round(
          os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30, 1),
      'load_before': load if load is not None else load_average(),
      'other_processes': len(busy) if busy is not None else len(
          busy_processes()),
      'revision': git_revision(),
      **software_versions(),
  }


def environment_lines(env, command, load_after=None):
  lines = [
      f"* Machine: {env['cpu']} ({env['cpu_id']}, {env['isa']}), "
      f"{env['cores']} cores, {env['memory_gib']} GiB RAM, no GPU; bfloat16 "
      'flags in /proc/cpuinfo: '
      f"{', '.join(env.get('bf16') or []) or 'none'} (of amx_bf16, "
      'avx512_bf16).',
      f"* Software: Python {env['python']}, TensorFlow {env['tensorflow']} "
      f"(oneDNN {env['onednn']}), TFP {env['tensorflow_probability']}, "
      f"tf-keras {env['tf_keras']}, NumPy {env['numpy']}; tfp_flowpp "
      f"{env['revision']}.",
      f"* Date: {env['date']}; load average (1/5/15 min) before the run "
      f"{', '.join(str(v) for v in env['load_before'])}"
      + (f", after {', '.join(str(v) for v in load_after)}"
         if load_after else '') +
      f"; other test/train processes at start: {env['other_processes']}.",
      f'* Command: `{command}`',
  ]
  return lines


# Flag files -------------------------------------------------------------------


def flag_values(config_name, overrides=()):
  """Parses ``configs/<config_name>.flags`` (+ ``--flag=value`` overrides)."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  import flowpp_flags  # pylint: disable=g-import-not-at-top
  values = flags.FlagValues()
  flowpp_flags.define_config_flags(values)
  path = os.path.join(ROOT, 'configs', f'{config_name}.flags')
  flowpp_flags.parse_flags(['bench', f'--flagfile={path}', *overrides], values)
  return values


def configs(config_name, image_shape=(8, 8, 1), num_levels=17, overrides=()):
  """(ModelConfig, DataConfig, TrainConfig) of a flag file."""
  import flowpp_flags  # pylint: disable=g-import-not-at-top
  values = flag_values(config_name, overrides)
  return (flowpp_flags.model_config(values, image_shape, num_levels),
          flowpp_flags.data_config(values), flowpp_flags.train_config(values))


# TFP's Glow as a DiscreteImageFlow ------------------------------------------------

GLOW_NETWORK_CALLS = []


def _counting_glow_network_class():
  import tensorflow_probability as tfp  # pylint: disable=g-import-not-at-top

  class CountingGlowDefaultNetwork(tfp.bijectors.GlowDefaultNetwork):
    """`tfb.GlowDefaultNetwork` that logs each call (at trace time)."""

    def __call__(self, *args, **kwargs):
      GLOW_NETWORK_CALLS.append(1)
      return super().__call__(*args, **kwargs)

  return CountingGlowDefaultNetwork


def tfb_glow_levels(image_shape, num_blocks):
  """[(H, W, channels of the block's steps, (exit leave, exit grab))].

  Mirrors `tfb.Glow._get_blockwise_splits` with the default
  ``grab_after_block`` (half the channels leave after every block but the
  last); index 0 is the coarsest (latent-most) level, as in TFP.
  """
  h, w, c = image_shape
  grabs = [0.5] * (num_blocks - 1) + [0.]
  splits, npass = [], 0
  for i, frac in enumerate(grabs):
    nchan = 4**(i + 1) * c
    ngrab = int((nchan - npass) * frac)
    nleave = nchan - ngrab - npass
    splits.append((nleave, ngrab))
    npass = (npass + ngrab) * 4
  splits = splits[::-1]
  n = num_blocks
  return [(h // 2**n * 2**i, w // 2**n * 2**i, sum(splits[i]), splits[i])
          for i in range(n)]


def tfb_glow_parameter_count(image_shape, num_blocks, steps, hidden):
  """Trainable parameters of `tfb.Glow` with `GlowDefaultNetwork`s (analytic)."""
  total = 0
  for _, _, c, (nleave, ngrab) in tfb_glow_levels(image_shape, num_blocks):
    half = c // 2
    network = (9 * half * hidden + hidden) + (hidden * hidden + hidden) + (
        9 * hidden * 2 * half + 2 * half)
    total += steps * (network + c * c + 2 * c)
    if nleave and ngrab:
      total += 9 * nleave * 2 * ngrab + 2 * ngrab
  return total


def match_tfb_glow(target, image_shape, num_blocks, steps):
  """Hidden width whose parameter count is closest to ``target``."""
  best = None
  for hidden in range(8, 4097):
    count = tfb_glow_parameter_count(image_shape, num_blocks, steps, hidden)
    if best is None or abs(count - target) < abs(best[1] - target):
      best = (hidden, count)
    if count > target:
      break
  return best


def build_tfb_glow_model(image_shape,
                         num_levels,
                         num_blocks,
                         steps,
                         hidden,
                         preprocess_alpha=0.9,
                         seed=0,
                         count_calls=False):
  """`tfb.Glow` (TFP's own) as the flow of a `DiscreteImageFlow`.

  data → `LogitPreprocess` → ``tfb.Invert(tfb.Glow)`` (TFP's Glow maps a flat
  latent to the image) → reshape to the image-shaped N(0, I) prior; uniform
  dequantization. Bits/dim are therefore computed exactly as for our models.

  TFP 0.25's ``tfb.Glow`` needs the batch size known when a function is
  traced (its ``Expand`` mixes int64 event shapes with the int32 batch
  shape); every function of the library's `Trainer` and `BpdEvaluator` is
  traced with a static batch size, and so are the bench's.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_probability as tfp  # pylint: disable=g-import-not-at-top
  from tfp_flowpp import bijectors as fb  # pylint: disable=g-import-not-at-top
  from tfp_flowpp.distributions import dequantization  # pylint: disable=g-import-not-at-top
  from tfp_flowpp.distributions import discrete_image_flow  # pylint: disable=g-import-not-at-top
  tfb = tfp.bijectors
  image_shape = tuple(int(d) for d in image_shape)
  size = math.prod(image_shape)
  network_class = (
      _counting_glow_network_class() if count_calls else tfb.GlowDefaultNetwork)
  tf.random.set_seed(seed)
  glow = tfb.Glow(
      output_shape=image_shape,
      num_glow_blocks=num_blocks,
      num_steps_per_block=steps,
      coupling_bijector_fn=lambda shape: network_class(
          shape, num_hidden=hidden),
      exit_bijector_fn=tfb.GlowDefaultExitNetwork,
      seed=seed)
  flow = tfb.Chain([
      tfb.Reshape(event_shape_out=image_shape, event_shape_in=[size]),
      tfb.Invert(glow),
      fb.LogitPreprocess(num_levels, preprocess_alpha, name='flow_preprocess'),
  ], name='tfb_glow_flow')
  flow.glow = glow  # Variable tracking through the chain is automatic; handy.
  return discrete_image_flow.DiscreteImageFlow(
      flow, dequantization.UniformDequantizer(image_shape), image_shape,
      num_levels)


def tfb_glow_model_fn(glow_spec):
  """``Trainer(model_fn=...)`` building `build_tfb_glow_model(**glow_spec)`.

  The library's `Trainer` then does everything else — optimizer, train step,
  EMA evaluation, checkpoints, metrics, CPU budget — exactly as for our
  models; the model config only supplies the image shape and levels.
  """
  spec = dict(glow_spec)

  def model_fn(model_config):
    return build_tfb_glow_model(model_config.image_shape,
                                model_config.num_levels, **spec)

  return model_fn


# Networks of our couplings ----------------------------------------------------------


def count_coupling_network_calls(model, fn):
  """(main couplings, dequantizer couplings, network calls made by ``fn()``).

  `tfp_flowpp.testing.counting_network_calls`, the instrument
  tests/test_network_calls.py uses: call counts are Python calls, i.e. per
  trace when ``fn`` traces a `tf.function` — the number of network
  evaluations in the graph.
  """
  from tfp_flowpp import testing  # pylint: disable=g-import-not-at-top
  with testing.counting_network_calls(model.bijector, model.dequantizer) as (
      (main, dequantizer), calls):
    fn()
  return len(main), len(dequantizer), len(calls)


# Workers ---------------------------------------------------------------------------


def peak_rss_mib():
  """Peak resident set size of this process so far (getrusage ru_maxrss)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.


def current_rss_mib():
  try:
    with open('/proc/self/statm') as f:
      return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2**20
  except OSError:
    return float('nan')


def emit_result(result):
  print(RESULT_PREFIX + json.dumps(result), flush=True)


def run_worker(script, spec, timeout=3600, stream=sys.stdout, env=None):
  """Runs ``script --worker=JSON`` in a fresh process; returns its result.

  Each measurement gets its own process so peak RSS and TF state belong to
  it alone. Raises RuntimeError with the worker's last output on failure.
  """
  command = [sys.executable, script, '--worker', json.dumps(spec)]
  worker_env = dict(os.environ)
  worker_env['PYTHONPATH'] = os.pathsep.join(
      [ROOT, os.path.join(ROOT, 'bin')] +
      [p for p in worker_env.get('PYTHONPATH', '').split(os.pathsep) if p])
  worker_env.update(env or {})
  started = time.time()
  proc = subprocess.run(command, capture_output=True, text=True,
                        timeout=timeout, env=worker_env, cwd=ROOT, check=False)
  result = None
  for line in proc.stdout.splitlines():
    if line.startswith(RESULT_PREFIX):
      result = json.loads(line[len(RESULT_PREFIX):])
  if proc.returncode or result is None:
    tail = '\n'.join((proc.stdout + proc.stderr).strip().splitlines()[-25:])
    raise RuntimeError(f'worker {spec} failed (exit {proc.returncode}):\n'
                       f'{tail}')
  result['worker_seconds'] = time.time() - started
  return result


def parse_worker_arg(argv):
  """The JSON spec after ``--worker``, or None."""
  if '--worker' in argv:
    return json.loads(argv[argv.index('--worker') + 1])
  return None


def run_as_worker(argv, worker_main):
  """Runs ``worker_main(spec)`` if ``argv`` holds ``--worker``; True if so."""
  spec = parse_worker_arg(argv)
  if spec is None:
    return False
  worker_main(spec)
  return True


def time_calls(fn, min_seconds=2., min_calls=3, max_calls=50, warmup=1):
  """Median wall seconds per call of ``fn()`` after ``warmup`` calls."""
  for _ in range(warmup):
    fn()
  times = []
  start = time.perf_counter()
  while len(times) < max_calls and (len(times) < min_calls or
                                    time.perf_counter() - start < min_seconds):
    t = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t)
  times.sort()
  return {
      'median': times[len(times) // 2],
      'min': times[0],
      'max': times[-1],
      'calls': len(times),
  }


# Command line ----------------------------------------------------------------------


def base_parser(description, section, quick_help):
  """The flags both scripts share: ``--quick``, ``--output_doc``, ``--wait_for_quiet``."""
  parser = argparse.ArgumentParser(description=description)
  parser.add_argument('--quick', action='store_true', help=quick_help)
  parser.add_argument('--output_doc', default=None,
                      help=f'Markdown file whose {section} section is '
                      'rewritten (default docs/benchmarks.md; none with '
                      '--quick).')
  parser.add_argument('--wait_for_quiet', type=float, default=0.,
                      help='Wait up to this many seconds for load < 0.5.')
  return parser


def output_doc(args):
  """Where the results section goes: None for a --quick run without a doc."""
  return args.output_doc or (None if args.quick else DOC_PATH)


def add_figures_dir_flag(parser, what='PNGs'):
  """``--figures_dir``, resolved by `figures_dir`."""
  parser.add_argument('--figures_dir', default=None,
                      help=f'Where {what} go (default docs/figures, or a '
                      'figures/ folder next to --output_doc; a temporary '
                      'folder for --quick without --output_doc).')


def figures_dir(args, prefix):
  """The figures folder of a run: the flag, else beside its doc.

  docs/figures for docs/benchmarks.md, ``figures/`` next to another
  ``--output_doc``, and a new temporary folder (``prefix`` names it) for a
  --quick run without a doc, so that one leaves the repository alone.
  """
  doc = output_doc(args)
  if args.figures_dir:
    return args.figures_dir
  if doc is None:
    return tempfile.mkdtemp(prefix=prefix)
  if os.path.abspath(doc) == DOC_PATH:
    return FIGURES_DIR
  return os.path.join(os.path.dirname(os.path.abspath(doc)), 'figures')


def reproduce_command(script, argv, local_flags=('--output_doc',)):
  """The command line recorded in the doc, without machine-local paths."""
  return f'python bench/{script}' + ''.join(
      f' {a}' for a in argv[1:] if not a.startswith(tuple(local_flags)))


# Markdown ---------------------------------------------------------------------------


def markdown_table(headers, rows, align=None):
  align = align or ['l'] + ['r'] * (len(headers) - 1)
  sep = ['---:' if a == 'r' else '---' for a in align]
  lines = ['| ' + ' | '.join(headers) + ' |', '|' + '|'.join(sep) + '|']
  for row in rows:
    lines.append('| ' + ' | '.join(str(c) for c in row) + ' |')
  return '\n'.join(lines)


def text_table(headers, rows):
  """Plain-text table for stdout."""
  cells = [list(map(str, headers))] + [[str(c) for c in r] for r in rows]
  widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
  out = []
  for j, row in enumerate(cells):
    out.append('  '.join(c.ljust(w) if i == 0 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(row, widths))))
    if j == 0:
      out.append('  '.join('-' * w for w in widths))
  return '\n'.join(out)


def fmt(value, digits=3):
  if value is None or (isinstance(value, float) and not math.isfinite(value)):
    return '–'
  if isinstance(value, int):
    return f'{value:,}'
  if abs(value) >= 1000:
    return f'{value:,.0f}'
  if abs(value) >= 100:
    return f'{value:.1f}'
  return f'{value:.{digits}g}'


def update_doc_section(name, body, path=DOC_PATH):
  """Replaces ``<!-- BEGIN name -->…<!-- END name -->`` in ``path``."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  text = open(path).read() if os.path.exists(path) else _DOC_SKELETON
  begin, end = f'<!-- BEGIN {name} -->', f'<!-- END {name} -->'
  block = f'{begin}\n{body.strip()}\n{end}'
  pattern = re.compile(re.escape(begin) + '.*?' + re.escape(end), re.S)
  if pattern.search(text):
    text = pattern.sub(lambda _: block, text)
  else:
    text = text.rstrip() + '\n\n' + block + '\n'
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    f.write(text)
  os.replace(tmp, path)


def write_section(doc, name, lines, env, command):
  """Section ``name`` of ``doc``: ``lines`` then the environment lines."""
  body = '\n'.join(list(lines) + environment_lines(
      env, command, load_after=load_average()))
  update_doc_section(name, body, doc)
  print(f'Wrote the {name} section of {doc}')


def relative_to_doc(path, doc_path):
  return os.path.relpath(path, os.path.dirname(os.path.abspath(doc_path)))
