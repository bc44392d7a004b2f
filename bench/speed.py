#!/usr/bin/env python3
"""Speed benchmarks: training step, log_prob and sampling throughput, peak
memory, coupling-network calls, the mixture-CDF inverse, achieved FLOP/s,
mixed precision (float32 against mixed_bfloat16) and the fused attention
kernel (against TensorFlow's attention ops).

    python bench/speed.py            # full run (~37 min on 2 cores), rewrites
                                     # the speed section of docs/benchmarks.md
    python bench/speed.py --quick    # smoke run (tiny model, < 1 min),
                                     # no doc unless --output_doc is given

Every (model, measurement) runs in its own subprocess, so peak RSS
(``getrusage(RUSAGE_SELF).ru_maxrss``: TF runtime + model + optimizer +
traced graph + activations) belongs to that measurement alone.

Models: our Flow++ configs (``configs/*.flags``) and TFP's own `tfb.Glow`
(``GlowDefaultNetwork`` couplings, ``GlowDefaultExitNetwork`` exits, K steps
per level as in Glow) with its hidden width chosen so its parameter count
matches ours, wrapped as a `DiscreteImageFlow` (our logit preprocessing,
uniform dequantization). Its training step is the library's `Trainer` train
step with the same optimizer settings as the matched Flow++ config.
"""

import collections
import dataclasses
import functools
import glob
import math
import os
import re
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # pylint: disable=g-import-not-at-top,wrong-import-position

SCRIPT = os.path.abspath(__file__)

# Model lineup ---------------------------------------------------------------------

# What is measured of each model: ours in float32 (the flag files leave
# --precision at auto, which is bfloat16 on CPUs with bfloat16 arithmetic),
# tfb.Glow, and the precision and attention-kernel axes: the same model with
# these flags (--attention_kernel=auto is the fused kernel for bfloat16
# networks and TensorFlow's ops for float32 ones; the other two kinds swap
# that).
KINDS = ('ours', 'tfb_glow', 'ours_bf16', 'ours_fused',
         'ours_bf16_tf_attention', 'ours_bf16_tf_elementwise')
KIND_OVERRIDES = {
    'ours': ('--precision=float32',),
    'ours_bf16': ('--precision=mixed_bfloat16',),
    'ours_fused': ('--precision=float32', '--attention_kernel=fused'),
    'ours_bf16_tf_attention': ('--precision=mixed_bfloat16',
                               '--attention_kernel=tensorflow'),
    'ours_bf16_tf_elementwise': ('--precision=mixed_bfloat16',),
}
# ... and environment variables: the fused elementwise kernels of the gated
# blocks (`fused_elementwise`, on for bfloat16 networks) switched off.
KIND_ENVIRONMENT = {
    'ours_bf16_tf_elementwise': {'TFP_FLOWPP_FUSED_ELEMENTWISE': '0'},
}
# The attention core alone (`fused_attention.self_attention` against
# `blocks.attention`): (label, batch, heads, positions, head dimension) of
# the attention layers of the Fashion-MNIST and CIFAR-10 configs.
ATTENTION_SHAPES = (
    ('Fashion-MNIST 28×14', 64, 4, 392, 12),
    ('Fashion-MNIST 14×7', 64, 4, 98, 12),
    ('CIFAR-10 32×16', 16, 4, 512, 24),
    ('CIFAR-10 16×8', 16, 4, 128, 24),
)
QUICK_ATTENTION_SHAPES = (('tiny', 4, 2, 40, 12),)
ATTENTION_DTYPES = ('float32', 'bfloat16', 'float16')

# (label, config, image shape, levels, batch, tfb.Glow blocks, K per block)
FULL_MODELS = (
    ('CIFAR-10 Flow++', 'cifar10_flowpp', (32, 32, 3), 256, 16, 3, 32),
    ('Fashion-MNIST Flow++', 'fashion_mnist_flowpp', (28, 28, 1), 256, 64, 2,
     8),
    ('quickstart (digits)', 'quickstart', (8, 8, 1), 17, 128, 3, 8),
)
QUICK_MODELS = (('tiny (4×4 digits)', 'tiny', (4, 4, 1), 17, 32, 2, 2),)

# Worker side ------------------------------------------------------------------------


def _images(spec, batch=None, seed=1):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  batch = batch or spec['batch']
  return tf.random.stateless_uniform(
      [batch] + list(spec['image_shape']), [seed, 7],
      0, spec['num_levels'], dtype=tf.int32)


def _build_model(spec):
  from tfp_flowpp import model_builder  # pylint: disable=g-import-not-at-top
  if spec['kind'] == 'tfb_glow':
    g = spec['glow']
    return _common.build_tfb_glow_model(
        spec['image_shape'], spec['num_levels'], g['num_blocks'], g['steps'],
        g['hidden'], count_calls=True)
  model_config, _, _ = _common.configs(spec['config'], spec['image_shape'],
                                       spec['num_levels'],
                                       spec.get('overrides', ()))
  return model_builder.build_model(model_config)


def _graph_flops(concrete_function):
  """TF profiler float-op count of a concrete function's graph."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  graph = concrete_function.graph
  options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
  options['output'] = 'none'
  total = tf.compat.v1.profiler.profile(graph, options=options).total_float_ops
  by_type = collections.Counter()
  from tensorflow.python.framework import ops as ops_lib  # pylint: disable=g-import-not-at-top,g-direct-tensorflow-import
  for op in graph.get_operations():
    if op.type in ('Conv2D', 'Conv2DBackpropInput', 'Conv2DBackpropFilter',
                   'MatMul', 'BatchMatMulV2', 'BatchMatMulV3', 'Einsum'):
      try:
        stats = ops_lib.get_stats_for_node_def(graph, op.node_def, 'flops')
        by_type[op.type] += stats.value or 0
      except (ValueError, TypeError):
        pass
  return {
      'flops': int(total),
      'dense_flops': int(sum(by_type.values())),
      'graph_ops': len(graph.get_operations()),
  }


def _profile(fn, calls, logdir):
  """Op-type breakdown of ``calls`` runs of ``fn`` from a TF profiler trace.

  Returns [(op type, ms per call, share of op time)] and the total op time
  per call (summed over threads, so it can exceed the wall time).
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tensorflow.tsl.profiler.protobuf import xplane_pb2  # pylint: disable=g-import-not-at-top
  tf.profiler.experimental.start(logdir)
  try:
    for _ in range(calls):
      fn()
  finally:
    tf.profiler.experimental.stop()
  paths = sorted(glob.glob(os.path.join(logdir, 'plugins', 'profile', '*',
                                        '*.xplane.pb')))
  space = xplane_pb2.XSpace()
  with open(paths[-1], 'rb') as f:
    space.ParseFromString(f.read())
  by_type, count = collections.Counter(), collections.Counter()
  by_name = collections.Counter()
  for plane in space.planes:
    metadata = plane.event_metadata
    for line in plane.lines:
      if not line.name.startswith('tf_Compute'):
        continue
      for event in line.events:
        m = metadata[event.metadata_id]
        if ':' not in m.name or '::' in m.name:
          continue
        kind = m.display_name or m.name.rsplit(':', 1)[-1]
        ms = event.duration_ps / 1e9 / calls
        by_type[kind] += ms
        count[kind] += 1
        name = re.sub(r'_\d+', '_N', m.name.rsplit(':', 1)[0])
        by_name[f'{kind} {name}'] += ms
  total = sum(by_type.values())
  rows = [(k, v, v / total, count[k] // calls)
          for k, v in by_type.most_common()]
  names = [(k, v, v / total) for k, v in by_name.most_common(40)]
  return {'op_ms_per_call': total, 'ops': rows, 'names': names}


def _worker_log_prob(spec, result):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  model = _build_model(spec)
  x = _images(spec)
  model.initialize(x, seed=[1, 2])
  result['parameters'] = _count(model)
  out = result['log_prob'] = {}
  log_prob = tf.function(lambda x, seed: model.log_prob(x, seed=seed))
  seeds = iter(range(10**6))
  t = time.perf_counter()
  log_prob(x, tf.constant([0, 0])).numpy()
  out['trace_seconds'] = time.perf_counter() - t
  out['timing'] = _common.time_calls(
      lambda: log_prob(x, tf.constant([1, next(seeds)])).numpy(),
      min_seconds=spec['min_seconds'])
  y = tf.cast(x, tf.float32) + 0.5
  flow_log_prob = tf.function(model.continuous_log_prob)
  flow_log_prob(y).numpy()
  out['flow_timing'] = _common.time_calls(
      lambda: flow_log_prob(y).numpy(), min_seconds=spec['min_seconds'] / 2)
  out['flops'] = _graph_flops(
      log_prob.get_concrete_function(x, tf.constant([0, 0])))

  def log_prob_fixed_seed(x):
    return model.log_prob(x, seed=[3, 4])

  out['network_calls'] = _network_calls(
      spec, model,
      lambda: tf.function(log_prob_fixed_seed).get_concrete_function(x))
  out['flow_network_calls'] = _network_calls(
      spec, model, lambda: tf.function(model.continuous_log_prob)
      .get_concrete_function(y))
  if spec.get('profile'):
    out['profile'] = _profile(
        lambda: log_prob(x, tf.constant([2, next(seeds)])).numpy(),
        spec['profile_calls'], tempfile.mkdtemp(prefix='bench_prof_'))


def _worker_sample(spec, result):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  model = _build_model(spec)
  x = _images(spec)
  model.initialize(x, seed=[1, 2])
  result['parameters'] = _count(model)
  out = result['sample'] = {}
  batch = spec['batch']
  sample = tf.function(lambda seed: model.sample(batch, seed=seed))
  seeds = iter(range(10**6))
  t = time.perf_counter()
  sample(tf.constant([0, 0])).numpy()
  out['trace_seconds'] = time.perf_counter() - t
  out['timing'] = _common.time_calls(
      lambda: sample(tf.constant([1, next(seeds)])).numpy(),
      min_seconds=spec['min_seconds'])

  def sample_fixed_seed():
    return model.sample(batch, seed=[3, 4])

  out['network_calls'] = _network_calls(
      spec, model, tf.function(sample_fixed_seed).get_concrete_function)
  if spec.get('profile'):
    out['profile'] = _profile(
        lambda: sample(tf.constant([2, next(seeds)])).numpy(),
        spec['profile_calls'], tempfile.mkdtemp(prefix='bench_prof_'))


def _random_dataset(spec):
  """`data.from_arrays` of random images: a train split of one batch."""
  from tfp_flowpp import data as data_lib  # pylint: disable=g-import-not-at-top
  batch = spec['batch']
  images = _images(spec, batch=batch + 1, seed=2).numpy().astype('uint8')
  config = data_lib.DataConfig(validation_size=0, test_size=1)
  return data_lib.from_arrays(images, num_levels=spec['num_levels'],
                              name='random', config=config)


def _worker_train(spec, result):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tfp_flowpp import training  # pylint: disable=g-import-not-at-top
  model_config, _, train_config = _common.configs(
      spec['config'], spec['image_shape'], spec['num_levels'],
      spec.get('overrides', ()))
  train_config = dataclasses.replace(
      train_config, batch_size=spec['batch'], init_batch_size=spec['batch'])
  workdir = tempfile.mkdtemp(prefix='bench_train_')
  model_fn = None
  if spec['kind'] == 'tfb_glow':
    g = spec['glow']
    model_fn = _common.tfb_glow_model_fn(
        dict(num_blocks=g['num_blocks'], steps=g['steps'], hidden=g['hidden']))
  dataset = _random_dataset(spec)
  trainer = training.Trainer(model_config, dataset.config, train_config,
                             workdir, dataset=dataset, model_fn=model_fn)
  # Initialised by hand (as in the other workers) rather than by
  # `trainer.restore_or_initialize()`, which would also write config.json and
  # a step-0 checkpoint.
  x = tf.cast(_images(spec), tf.uint8)
  trainer.model.initialize(x, seed=[1, 2])
  trainer.optimizer.build(trainer.model.trainable_variables)
  result['parameters'] = _count(trainer.model)
  out = result['train'] = {
      'variables': len(trainer.model.trainable_variables)}
  train_step = trainer.train_step
  steps = iter(range(10**6))
  t = time.perf_counter()
  train_step(x, tf.constant(next(steps), tf.int64))[0].numpy()
  out['trace_seconds'] = time.perf_counter() - t
  out['timing'] = _common.time_calls(
      lambda: train_step(x, tf.constant(next(steps), tf.int64))[0].numpy(),
      min_seconds=spec['min_seconds'])
  out['flops'] = _graph_flops(
      train_step.get_concrete_function(x, tf.constant(0, tf.int64)))
  out['skipped_steps'] = int(trainer.skipped.numpy())
  if spec.get('profile'):
    out['profile'] = _profile(
        lambda: train_step(x, tf.constant(next(steps), tf.int64))[0].numpy(),
        spec['profile_calls'], tempfile.mkdtemp(prefix='bench_prof_'))
  shutil.rmtree(workdir, ignore_errors=True)


def _count(model):
  from tfp_flowpp import model_builder  # pylint: disable=g-import-not-at-top
  return model_builder.count_parameters(model)


def _network_calls(spec, model, trace):
  """Coupling-network evaluations in the graph ``trace()`` builds."""
  if spec['kind'] == 'tfb_glow':
    del _common.GLOW_NETWORK_CALLS[:]
    trace()
    steps = spec['glow']['num_blocks'] * spec['glow']['steps']
    return {'couplings': steps, 'calls': len(_common.GLOW_NETWORK_CALLS)}
  main, dequantizer, calls = _common.count_coupling_network_calls(model, trace)
  return {'couplings': main, 'dequantizer_couplings': dequantizer,
          'calls': calls}


def _worker_matmul(spec, result):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  n = spec['n']
  a = tf.random.normal([n, n], seed=1)
  b = tf.random.normal([n, n], seed=2)
  matmul = tf.function(lambda a, b: tf.reduce_sum(tf.matmul(a, b)))
  timing = _common.time_calls(lambda: matmul(a, b).numpy(),
                              min_seconds=spec['min_seconds'], min_calls=5)
  result['n'] = n
  result['seconds'] = timing['min']
  result['gflops'] = 2 * n**3 / timing['min'] / 1e9


def _worker_attention_core(spec, result):
  """Forward and forward + backward time of the attention core."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tfp_flowpp.networks import blocks  # pylint: disable=g-import-not-at-top
  from tfp_flowpp.networks import fused_attention  # pylint: disable=g-import-not-at-top

  def plain(qkv, heads):
    batch, steps, channels = qkv.shape
    x = tf.reshape(qkv, [batch, steps, 3, heads, channels // 3 // heads])
    q, k, v = tf.unstack(tf.transpose(x, [2, 0, 3, 1, 4]), axis=0)
    return tf.reshape(tf.transpose(blocks.attention(q, k, v), [0, 2, 1, 3]),
                      [batch, steps, channels // 3])

  rows = []
  for label, batch, heads, steps, dim in spec['shapes']:
    for dtype in spec['dtypes']:
      qkv = tf.cast(tf.random.stateless_normal(
          [batch, steps, 3 * heads * dim], seed=[1, 2]), dtype)
      row = {'label': label, 'batch': batch, 'heads': heads, 'steps': steps,
             'dim': dim, 'dtype': dtype}
      for name, fn in (('tensorflow', plain),
                       ('fused', fused_attention.self_attention)):
        forward = tf.function(lambda x, fn=fn: fn(x, heads))

        @tf.function
        def both(x, fn=fn):
          with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(tf.cast(fn(x, heads), tf.float32)**2)
          return tape.gradient(loss, x)

        for what, f in (('forward', forward), ('backward', both)):
          row[f'{name}_{what}'] = _common.time_calls(
              lambda f=f: f(qkv).numpy(), min_seconds=spec['min_seconds'],
              min_calls=5)['median']
      rows.append(row)
  result['attention_core'] = rows


def _mixture_problem(shape, k, dtype, seed):
  """Realistic mixture parameters and targets with known roots."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tfp_flowpp.bijectors import mixture_cdf  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  full = tuple(shape) + (k,)
  # Spread-out components as in a trained Flow++ coupling: logits ~ N(0, 2²),
  # means ~ N(0, 2²), log-scales ~ U(-4, 1) (the layer clamps at -7).
  log_weights = tf.nn.log_softmax(
      tf.constant(rng.normal(0., 2., full), dtype), axis=-1)
  means = tf.constant(rng.normal(0., 2., full), dtype)
  log_scales = tf.constant(rng.uniform(-4., 1., full), dtype)
  # Roots: mostly inside the mass, 1% far in the tails.
  x_true = rng.normal(0., 3., shape)
  tails = rng.random(shape) < 0.01
  x_true[tails] = rng.normal(0., 30., tails.sum())
  x_true = tf.constant(x_true, dtype)
  target = mixture_cdf.mixture_logistic_logit_cdf(x_true, log_weights, means,
                                                  log_scales)
  return x_true, target, log_weights, means, log_scales


def _worker_mixture_inverse(spec, result):
  for dtype in spec['dtypes']:
    result.setdefault('mixture', []).append(
        _mixture_inverse(dict(spec, dtype=dtype)))


def _mixture_inverse(spec):
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_probability as tfp  # pylint: disable=g-import-not-at-top
  from tfp_flowpp.bijectors import mixture_cdf  # pylint: disable=g-import-not-at-top
  import _mixture_bisection  # pylint: disable=g-import-not-at-top
  result = {'dtype': spec['dtype'], 'shape': spec['shape'], 'k': spec['k']}
  dtype = tf.as_dtype(spec['dtype'])
  x_true, target, log_weights, means, log_scales = _mixture_problem(
      spec['shape'], spec['k'], dtype, seed=0)
  finite = tf.math.is_finite(target)
  result['finite_targets'] = float(tf.reduce_mean(tf.cast(finite, tf.float32)))
  methods = {
      'chandrupatla': mixture_cdf.invert_mixture_logistic_logit_cdf,
      'bisection':
          _mixture_bisection.bisection_invert_mixture_logistic_logit_cdf,
      'bisection_200': functools.partial(
          _mixture_bisection.bisection_invert_mixture_logistic_logit_cdf,
          tolerance=-1.),
  }
  for name, method in methods.items():
    fn = tf.function(method)
    out = fn(target, log_weights, means, log_scales)
    timing = _common.time_calls(
        lambda fn=fn: fn(target, log_weights, means, log_scales).x.numpy(),
        min_seconds=spec['min_seconds'], min_calls=3, max_calls=10)
    x = out.x
    error = tf.abs(x - x_true)
    relative = error / tf.maximum(tf.ones([], dtype), tf.abs(x_true))
    residual = tf.abs(
        mixture_cdf.mixture_logistic_logit_cdf(x, log_weights, means,
                                               log_scales) - target)
    mask = tf.logical_and(finite, tf.math.is_finite(residual))
    result[name] = {
        'iterations': int(out.num_iterations),
        'seconds': timing['median'],
        'max_abs_error': float(tf.reduce_max(error)),
        'max_rel_error': float(tf.reduce_max(relative)),
        'max_residual': float(tf.reduce_max(tf.boolean_mask(residual, mask))),
        'nonfinite': int(tf.reduce_sum(tf.cast(
            tf.logical_not(tf.math.is_finite(x)), tf.int32))),
    }
  # Chandrupatla's per-element iteration counts (the library returns the max).
  low, high = mixture_cdf._bracket(target, means, log_scales)  # pylint: disable=protected-access
  eps = 2. * float(np.finfo(dtype.as_numpy_dtype).eps)
  magnitude = tf.where(low * high > 0, tf.minimum(tf.abs(low), tf.abs(high)),
                       tf.zeros_like(low))
  per_element = tfp.math.find_root_chandrupatla(
      lambda x: mixture_cdf.mixture_logistic_logit_cdf(
          x, log_weights, means, log_scales) - target,
      low=low, high=high,
      position_tolerance=eps * tf.maximum(tf.ones_like(magnitude), magnitude),
      value_tolerance=tf.zeros([], dtype), max_iterations=100).num_iterations
  iters = per_element.numpy().ravel()
  result['chandrupatla']['mean_iterations'] = float(iters.mean())
  result['chandrupatla']['p99_iterations'] = float(np.percentile(iters, 99))
  return result


WORKERS = {
    'log_prob': _worker_log_prob,
    'sample': _worker_sample,
    'train': _worker_train,
    'matmul': _worker_matmul,
    'attention_core': _worker_attention_core,
    'mixture_inverse': _worker_mixture_inverse,
}


def worker_main(spec):
  result = {'spec': spec, 'rss_after_import_mib': None}
  import tensorflow as tf  # pylint: disable=g-import-not-at-top,unused-import
  result['rss_after_import_mib'] = _common.current_rss_mib()
  for phase in spec['phases']:
    WORKERS[phase](spec, result)
  result['peak_rss_mib'] = _common.peak_rss_mib()
  _common.emit_result(result)


# Driver -----------------------------------------------------------------------------


def _glow_spec(config, image_shape, num_levels, num_blocks, steps):
  from tfp_flowpp import model_builder  # pylint: disable=g-import-not-at-top
  model_config, _, _ = _common.configs(config, image_shape, num_levels)
  ours = model_builder.count_parameters(model_builder.build_model(model_config))
  hidden, count = _common.match_tfb_glow(ours, image_shape, num_blocks, steps)
  return ours, {'num_blocks': num_blocks, 'steps': steps, 'hidden': hidden,
                'parameters': count}


def run(args):
  quick = args.quick
  load, busy = _common.wait_for_quiet(timeout=args.wait_for_quiet)
  env = _common.environment(load, busy)
  models = QUICK_MODELS if quick else FULL_MODELS
  if args.models:
    keep = set(args.models.split(','))
    models = tuple(m for m in models if m[1] in keep)
  min_seconds = 0.2 if quick else args.min_seconds
  results = {'env': env, 'models': [], 'matmul': [], 'mixture': []}
  started = time.time()

  def log(text):
    print(f'[{time.time() - started:6.0f}s] {text}', flush=True)

  def worker(spec, timeout=7200):
    return _common.run_worker(SCRIPT, spec, timeout=timeout,
                              env=KIND_ENVIRONMENT.get(spec.get('kind')))

  matmul_n = 512 if quick else 4096
  results['matmul'].append(worker({'phases': ['matmul'], 'n': matmul_n,
                                   'min_seconds': min_seconds}))
  log(f"matmul peak {results['matmul'][-1]['gflops']:.0f} GFLOP/s")
  for label, config, shape, levels, batch, blocks, steps in models:
    ours_count, glow = _glow_spec(config, shape, levels, blocks, steps)
    entry = {'label': label, 'config': config, 'image_shape': shape,
             'num_levels': levels, 'batch': batch, 'parameters': ours_count,
             'glow': glow}
    for kind in KINDS:
      spec = {'kind': kind, 'config': config, 'image_shape': list(shape),
              'num_levels': levels, 'batch': batch, 'glow': glow,
              'min_seconds': min_seconds,
              'profile': (kind in ('ours', 'ours_bf16') and not quick and
                          args.profile),
              'profile_calls': 2 if levels == 256 else 5,
              'overrides': list(KIND_OVERRIDES.get(kind, ()))}
      phases = ('log_prob', 'sample', 'train')
      if kind in KIND_OVERRIDES and kind != 'ours':
        phases = MIXED_PRECISION_PHASES
      if quick:
        out = worker(dict(spec, phases=list(phases)))
        for phase in phases:
          out[phase]['peak_rss_mib'] = out['peak_rss_mib']
        entry[kind] = out
      else:
        merged = {}
        for phase in phases:
          out = worker(dict(spec, phases=[phase]))
          out[phase]['peak_rss_mib'] = out['peak_rss_mib']
          merged[phase] = out[phase]
          merged['rss_after_import_mib'] = out['rss_after_import_mib']
          log(f'{label} {kind} {phase}: done in '
              f"{out['worker_seconds']:.0f}s, peak RSS "
              f"{out['peak_rss_mib']:.0f} MiB")
        entry[kind] = merged
    results['models'].append(entry)
  results['attention_core'] = worker({
      'phases': ['attention_core'], 'min_seconds': min_seconds,
      'shapes': QUICK_ATTENTION_SHAPES if quick else ATTENTION_SHAPES,
      'dtypes': ATTENTION_DTYPES})['attention_core']
  log('attention core done')
  shape = [4, 8, 8, 3] if quick else [64, 32, 32, 3]
  results['mixture'] = worker({
      'phases': ['mixture_inverse'], 'dtypes': ['float32', 'float64'],
      'shape': shape, 'k': 32, 'min_seconds': min_seconds})['mixture']
  log('mixture-CDF inverse done')
  if not quick:
    results['matmul'].append(worker({'phases': ['matmul'], 'n': matmul_n,
                                     'min_seconds': min_seconds}))
  results['load_after'] = _common.load_average()
  results['seconds'] = time.time() - started
  return results


# Report -----------------------------------------------------------------------------

PHASES = ('train', 'log_prob', 'sample')
MIXED_PRECISION_PHASES = ('log_prob', 'train')


def _rates(entry, kind):
  e, b = entry[kind], entry['batch']
  out = {p: b / e[p]['timing']['median'] for p in PHASES}
  out['flow_log_prob'] = b / e['log_prob']['flow_timing']['median']
  return out


def _name(entry, kind):
  if kind == 'ours':
    return f"{entry['label']} (`{entry['config']}`)"
  g = entry['glow']
  return (f"tfb.Glow {g['num_blocks']}×{g['steps']} steps, hidden "
          f"{g['hidden']}")


def _short(entry, kind):
  return entry['label'] + (' — ours' if kind == 'ours' else ' — tfb.Glow')


def _achieved(entry, kind, phase):
  e = entry[kind][phase]
  return e['flops']['flops'] / e['timing']['median'] / 1e9


def _flops_ratio(entry):
  ours = entry['ours']['log_prob']['flops']['flops']
  glow = entry['tfb_glow']['log_prob']['flops']['flops']
  b = entry['batch']
  return f'{ours / b / 1e9:.3g} / {glow / b / 1e9:.3g} ({ours / glow:.2f}×)'


def report(results, command):
  """Returns (stdout text, markdown section)."""
  env = results['env']
  peak = max(m['gflops'] for m in results['matmul'])
  models = results['models']
  md, out = [], []
  md.append('## Speed')
  md.append('')
  md += _common.environment_lines(env, command, results.get('load_after'))
  md.append(f"* Wall time of the whole run: {results['seconds'] / 60:.1f} "
            'min. Float32 matmul peak of this CPU, measured in the same run '
            f"(`tf.matmul` of two {results['matmul'][0]['n']}² matrices, best "
            'of ≥ 5 calls, at the start and at the end): ' +
            ', '.join(f"{m['gflops']:.0f}" for m in results['matmul']) +
            f' GFLOP/s; the larger, **{peak:.0f} GFLOP/s**, is the reference '
            'below.')
  md.append('')

  # Throughput.
  headers = ['model', 'params', 'batch', 'train step img/s', 'log_prob img/s',
             'flow log p img/s', 'sample img/s', 'sample ÷ log_prob time',
             'peak RSS MiB train / log_prob / sample']
  rows, ratio_rows = [], []
  for entry in models:
    for kind in ('ours', 'tfb_glow'):
      r = _rates(entry, kind)
      params = (entry['parameters']
                if kind == 'ours' else entry['glow']['parameters'])
      rows.append([
          _name(entry, kind), _common.fmt(params), entry['batch'],
          _common.fmt(r['train']), _common.fmt(r['log_prob']),
          _common.fmt(r['flow_log_prob']), _common.fmt(r['sample']),
          f"{r['log_prob'] / r['sample']:.2f}×",
          ' / '.join(f"{entry[kind][p]['peak_rss_mib']:,.0f}" for p in PHASES)
      ])
    ours, glow = _rates(entry, 'ours'), _rates(entry, 'tfb_glow')
    ratio_rows.append([
        entry['label'],
        f"{entry['parameters']:,} / {entry['glow']['parameters']:,} "
        f"({100 * (entry['glow']['parameters'] / entry['parameters'] - 1):+.2f}%)",
        f"{ours['train'] / glow['train']:.2f}×",
        f"{ours['log_prob'] / glow['log_prob']:.2f}×",
        f"{ours['sample'] / glow['sample']:.2f}×", _flops_ratio(entry)
    ])
  md.append('### Throughput (images/s; median over repeated calls)')
  md.append('')
  md.append(_common.markdown_table(headers, rows))
  md.append('')
  md.append(
      '*train step*: the library\'s `Trainer` train step (its `tf.function`: '
      'forward, backward, all-reduce, finite check, Adam with the warmup '
      'schedule, global-norm clipping and the EMA update; dropout as in the '
      'config) on random images of the stated batch size, built by `Trainer` '
      'from the flag file. *log_prob*: `model.log_prob(x)`, the single-sample '
      'dequantization bound (dequantizer + flow). *flow log p*: the '
      'continuous flow alone (`model.continuous_log_prob`), the direction '
      'sampling inverts. *sample*: `model.sample(batch)` (prior → inverse '
      'flow → quantize). All inside `tf.function`; the first (tracing) call '
      'is excluded. *peak RSS*: `getrusage(RUSAGE_SELF).ru_maxrss` of a '
      'fresh process that built and initialised the model and ran only that '
      'measurement (including the TF runtime, '
      f"≈{models[0]['ours'].get('rss_after_import_mib') or 0:.0f} MiB after "
      '`import tensorflow`).')
  md.append('')
  md.append('### Ours ÷ `tfb.Glow` at a matched parameter count')
  md.append('')
  ratio_headers = ['model', 'params ours / tfb.Glow', 'train step',
                   'log_prob', 'sample', 'log_prob GFLOP/image ours / Glow']
  md.append(_common.markdown_table(ratio_headers, ratio_rows))
  md.append('')
  md.append(
      '`tfb.Glow(output_shape, num_glow_blocks, num_steps_per_block, '
      'coupling_bijector_fn=lambda s: tfb.GlowDefaultNetwork(s, num_hidden=H), '
      'exit_bijector_fn=tfb.GlowDefaultExitNetwork)` with K steps per level as '
      'in Glow; H is the width whose parameter count (analytic, checked '
      'against the built model) is closest to ours. It is the flow of a '
      '`DiscreteImageFlow` with our `LogitPreprocess` and uniform '
      'dequantization, and is trained by the same `Trainer` step with the '
      'same optimizer settings.')
  md.append('')

  # Mixed precision.
  mixed_headers = ['model', 'batch', 'train img/s float32', 'train img/s bf16',
                   'train bf16 ÷ float32', 'log_prob img/s float32',
                   'log_prob img/s bf16', 'log_prob bf16 ÷ float32']
  mixed_rows = []
  for entry in models:
    row = [entry['label'], entry['batch']]
    for phase in MIXED_PRECISION_PHASES[::-1]:
      rate = {k: entry['batch'] / entry[k][phase]['timing']['median']
              for k in ('ours', 'ours_bf16')}
      row += [_common.fmt(rate['ours']), _common.fmt(rate['ours_bf16']),
              f"{rate['ours_bf16'] / rate['ours']:.2f}×"]
    mixed_rows.append(row)
  md.append('### Mixed precision: float32 against `--precision=mixed_bfloat16`')
  md.append('')
  md.append(_common.markdown_table(mixed_headers, mixed_rows))
  md.append('')
  md.append(
      'The same model, measured the same way in the same run: '
      '`--precision=mixed_bfloat16` runs the conditioner networks (coupling '
      'networks, dequantizer context network) in bfloat16 with float32 '
      'layer-norm statistics and attention in the fused kernel (the '
      '`auto` default for 16-bit networks; float32 networks use '
      'TensorFlow\'s attention ops), and everything of the flow (coupling '
      'transforms, log-dets, ActNorm, 1×1 convolutions, preprocessing, '
      'prior, bound) in float32. How much bfloat16 gains depends on the '
      "CPU's bfloat16 support (the bfloat16 flags of the machine line "
      'above): AMX-BF16 speeds up TF matmuls and convolutions 4–7× over '
      'float32, AVX512-BF16 (Zen 4) about 1.9×, while TF\'s elementwise '
      'bfloat16 CPU kernels are slower than float32 (1.6× on Zen 4), so '
      'the gain is less than the convolutions\' share suggests.')
  md.append('')

  # Attention kernel.
  kernel_headers = ['model', 'precision', 'train img/s TF ops',
                    'train img/s fused', 'train fused ÷ TF ops',
                    'log_prob img/s TF ops', 'log_prob img/s fused',
                    'log_prob fused ÷ TF ops']
  kernel_rows = []
  elementwise_rows = []
  for entry in models:
    rate = {(k, p): entry['batch'] / entry[k][p]['timing']['median']
            for k in ('ours', 'ours_bf16', 'ours_fused',
                      'ours_bf16_tf_attention', 'ours_bf16_tf_elementwise')
            for p in MIXED_PRECISION_PHASES}
    for precision, fused, plain in (
        ('float32', 'ours_fused', 'ours'),
        ('mixed_bfloat16', 'ours_bf16', 'ours_bf16_tf_attention')):
      row = [entry['label'], precision]
      for phase in ('train', 'log_prob'):
        row += [_common.fmt(rate[plain, phase]),
                _common.fmt(rate[fused, phase]),
                f'{rate[fused, phase] / rate[plain, phase]:.2f}×']
      kernel_rows.append(row)
    row = [entry['label']]
    for phase in ('train', 'log_prob'):
      plain, fused = ('ours_bf16_tf_elementwise', phase), ('ours_bf16', phase)
      row += [_common.fmt(rate[plain]), _common.fmt(rate[fused]),
              f'{rate[fused] / rate[plain]:.2f}×']
    elementwise_rows.append(row)
  core_headers = ['attention layer', 'B × heads', 'N', 'd', 'dtype',
                  'forward ms TF ops', 'forward ms fused', 'forward speed-up',
                  'fwd + bwd ms TF ops', 'fwd + bwd ms fused',
                  'fwd + bwd speed-up']
  core_rows = [[
      r['label'], f"{r['batch']} × {r['heads']}", r['steps'], r['dim'],
      r['dtype'], f"{1000 * r['tensorflow_forward']:.1f}",
      f"{1000 * r['fused_forward']:.1f}",
      f"{r['tensorflow_forward'] / r['fused_forward']:.2f}×",
      f"{1000 * r['tensorflow_backward']:.1f}",
      f"{1000 * r['fused_backward']:.1f}",
      f"{r['tensorflow_backward'] / r['fused_backward']:.2f}×"
  ] for r in results['attention_core']]
  md.append('### Fused attention kernel: `--attention_kernel=fused` against '
            'TensorFlow ops')
  md.append('')
  md.append(_common.markdown_table(kernel_headers, kernel_rows))
  md.append('')
  md.append(_common.markdown_table(core_headers, core_rows))
  md.append('')
  md.append(
      'The same model, measured the same way in the same run, with '
      'TensorFlow\'s attention ops (QKᵀ, softmax, PV and their gradients, '
      'each writing the [N, N] logits; `blocks.attention`) and with the '
      'fused CPU kernel (`tfp_flowpp/networks/kernels/self_attention.cc`: '
      'one pass per block of query rows with the logits in the L2 cache; '
      'bfloat16 products with AVX512-BF16 dot products where the CPU has '
      'them). `--attention_kernel=auto`, the default, is the fused kernel '
      'for 16-bit networks and TensorFlow\'s ops for float32 ones, so the '
      'mixed-precision table above compares the two defaults. Second table: '
      'the attention core alone (`fused_attention.self_attention` against '
      '`blocks.attention` on the same [B, N, 3·heads·d] tensor; *fwd + bwd*: '
      'the gradient of a sum of squares of the output, forward included), '
      'at the shapes of the configs\' attention layers; median of repeated '
      '`tf.function` calls.')
  md.append('')
  elementwise_headers = ['model (mixed_bfloat16)', 'train img/s TF ops',
                         'train img/s fused', 'train fused ÷ TF ops',
                         'log_prob img/s TF ops', 'log_prob img/s fused',
                         'log_prob fused ÷ TF ops']
  md.append('### Fused elementwise kernels of the gated blocks (bfloat16 '
            'networks) against TensorFlow ops')
  md.append('')
  md.append(_common.markdown_table(elementwise_headers, elementwise_rows))
  md.append('')
  md.append(
      'The same bfloat16 model (defaults otherwise: fused attention), '
      'measured the same way in the same run, with the concatenated ELU and '
      'the gated residual output `x + a·σ(b)` of every gated block as '
      'TensorFlow ops (casts to float32 and back around ELU and sigmoid, '
      'negation, concatenation, split, product, residual add; '
      '`TFP_FLOWPP_FUSED_ELEMENTWISE=0`) and as the fused kernels '
      '(`tfp_flowpp/networks/kernels/gated_elementwise.cc`: one pass over '
      'memory each, forward and gradient; the default for bfloat16 '
      'networks).')
  md.append('')

  # Network calls.
  call_rows = []
  for entry in models:
    for kind in ('ours', 'tfb_glow'):
      e = entry[kind]
      nc = e['log_prob']['network_calls']
      fc = e['log_prob']['flow_network_calls']
      sc = e['sample']['network_calls']
      deq = nc.get('dequantizer_couplings', 0)
      once = (nc['calls'] == nc['couplings'] + deq and
              fc['calls'] == nc['couplings'] and
              sc['calls'] == nc['couplings'])
      call_rows.append([
          _short(entry, kind), f"{nc['couplings']} + {deq}", nc['calls'],
          fc['calls'], sc['calls'],
          'yes' if once else
          f"no: {fc['calls'] / nc['couplings']:.0f} per coupling in log p"
      ])
  md.append('### Coupling-network evaluations')
  md.append('')
  call_headers = ['model', 'couplings (flow + dequantizer)',
                  'per `log_prob`', 'per flow `log_prob`', 'per `sample`',
                  'once per coupling?']
  md.append(_common.markdown_table(call_headers, call_rows))
  md.append('')
  md.append(
      'Counted by wrapping every coupling network in a counter (as '
      '`tests/test_network_calls.py` does; for `tfb.Glow`, a '
      '`GlowDefaultNetwork` subclass) and tracing the `tf.function`, i.e. '
      'the number of network evaluations in the graph. `tfb.RealNVP`, which '
      '`tfb.Glow` uses, calls its network once for the transform and once '
      'more for the log-det; `tfb.Glow`\'s exit couplings are not counted.')
  md.append('')

  # FLOP/s.
  flop_rows = []
  for entry in models:
    for kind in ('ours', 'tfb_glow'):
      e = entry[kind]
      train = e['train']['flops']
      flop_rows.append([
          _short(entry, kind), f"{train['flops'] / entry['batch'] / 1e9:.3g}",
          f"{100 * train['dense_flops'] / train['flops']:.0f}%",
          f"{train['graph_ops']:,}", f"{e['train']['variables']:,}",
          f"{_achieved(entry, kind, 'train'):.1f}",
          f"{100 * _achieved(entry, kind, 'train') / peak:.1f}%",
          f"{_achieved(entry, kind, 'log_prob'):.1f}",
          f"{100 * _achieved(entry, kind, 'log_prob') / peak:.1f}%"
      ])
  md.append('### Achieved FLOP/s')
  md.append('')
  flop_headers = ['model', 'train GFLOP / image', 'conv + matmul share',
                  'ops in train graph', 'variables', 'train GFLOP/s',
                  'of peak', 'log_prob GFLOP/s', 'of peak']
  md.append(_common.markdown_table(flop_headers, flop_rows))
  md.append('')
  md.append(
      'FLOPs: TF\'s profiler float-operation count '
      '(`tf.compat.v1.profiler.profile(graph, float_operation())`) of the '
      'concrete function\'s graph: forward + backward for the train step (the '
      'Adam/EMA update sits in a `tf.cond` branch function and is not '
      'counted; it is O(parameters)), forward for `log_prob`. Every op with a '
      'registered FLOP statistic is counted; *conv + matmul share* is the '
      'part in Conv2D (and its two backprops), MatMul and BatchMatMul. '
      'Achieved = FLOPs ÷ median wall time. *ops in train graph*: ops in '
      'the traced function before Grappler.')
  md.append('')

  # Profiles: per model, float32 and then mixed_bfloat16 (its phases only).
  bf16_phases = [p for p in PHASES if p in MIXED_PRECISION_PHASES]
  profiled = [(e, kind, precision, phases) for e in models
              for kind, precision, phases in (
                  ('ours', 'float32', PHASES),
                  ('ours_bf16', 'mixed_bfloat16', bf16_phases))
              if any(e.get(kind, {}).get(p, {}).get('profile')
                     for p in phases)]
  for entry, kind, precision, phases in profiled:
    runs = entry[kind]
    md.append(f"### Where the time goes: {entry['label']} "
              f"(`{entry['config']}`, batch {entry['batch']}, {precision})")
    md.append('')
    names = []
    for phase in phases:
      p = runs[phase].get('profile')
      for name, _, _, _ in (p['ops'][:10] if p else []):
        if name not in names:
          names.append(name)
    prof_rows = []
    for name in names:
      row = [f'`{name}`']
      for phase in phases:
        p = runs[phase].get('profile')
        hit = [o for o in (p['ops'] if p else []) if o[0] == name]
        row.append(f'{hit[0][1]:,.1f} ms ({100 * hit[0][2]:.0f}%)'
                   if hit else '–')
      prof_rows.append(row)
    prof_rows.append(['**all ops** (summed over threads)'] + [
        f"{runs[p]['profile']['op_ms_per_call']:,.1f} ms"
        if runs[p].get('profile') else '–' for p in phases
    ])
    prof_rows.append(['wall time per call'] + [
        f"{1000 * runs[p]['timing']['median']:,.1f} ms" for p in phases
    ])
    md.append(_common.markdown_table(
        ['op type'] + [{'train': 'train step'}.get(p, p) for p in phases],
        prof_rows))
    md.append('')
  if profiled:
    md.append(
        'From a `tf.profiler.experimental` trace of repeated calls, read from '
        'its XPlane file: time inside TF op kernels, by op type, summed over '
        'the executor threads (the total exceeds the wall time when '
        'independent ops overlap; the wall time minus the critical path is '
        'executor overhead). `_Mkl*` / `_MklNative*` are the oneDNN kernels '
        'Grappler rewrites Conv2D, MatMul, BatchMatMul, Softmax and '
        'Transpose into (`…Fused…` when a BiasAdd is folded in).')
    md.append('')

  # Mixture inverse.
  mix_rows = []
  for m in results['mixture']:
    c = m['chandrupatla']
    for name, r in (('Chandrupatla (ours)', c),
                    ('bisection, official stop rule', m['bisection']),
                    ('bisection, fixed 200 steps', m['bisection_200'])):
      mix_rows.append([
          m['dtype'], name, r['iterations'],
          f"{r['mean_iterations']:.1f}" if 'mean_iterations' in r else '–',
          f"{1000 * r['seconds']:,.0f}",
          f"{r['seconds'] / c['seconds']:.1f}×", f"{r['max_abs_error']:.1e}",
          f"{r['max_rel_error']:.1e}", f"{r['max_residual']:.1e}",
          r['nonfinite']
      ])
  shape = '×'.join(str(s) for s in results['mixture'][0]['shape'])
  md.append(f'### Mixture-of-logistics CDF inverse ({shape} values, K = '
            f"{results['mixture'][0]['k']})")
  md.append('')
  mix_headers = ['dtype', 'method', 'iterations', 'mean iterations / element',
                 'time ms', 'time ÷ Chandrupatla', 'max abs error', 'max rel. error',
                 'max |logit F(x) − t|', 'non-finite']
  md.append(_common.markdown_table(mix_headers, mix_rows))
  md.append('')
  md.append(
      'Problem: log-weights = log_softmax(N(0, 2²)), means ~ N(0, 2²), '
      'log-scales ~ U(−4, 1) per component (well separated components, as in '
      'a trained coupling), roots x* ~ N(0, 3²) with 1% from N(0, 30²) (far '
      'tails); targets t = logit F(x*). *Chandrupatla*: '
      '`invert_mixture_logistic_logit_cdf` (exact bracket, tolerance two ulps '
      'relative to |x|; *iterations* is the loop count, i.e. the slowest '
      'element). *Bisection*: `bisection_invert_mixture_logistic_logit_cdf`, '
      'the official method (bounds μ ∓ 200·Σs; official stop rule: max |Δx| '
      '< 1e-12 or 200 steps, which in float32 ends as soon as no element '
      'moves any more; *fixed 200 steps*: tolerance −1). Errors are against x*; relative error is |x − x*| ÷ '
      'max(1, |x*|) (float32 rounding of x* itself is ~6e-8). Median wall '
      'time of a `tf.function` call.')
  md.append('')

  # Targets.
  target_rows = []
  for entry in models:
    r, g = _rates(entry, 'ours'), _rates(entry, 'tfb_glow')
    ratio = r['log_prob'] / r['sample']
    target_rows.append([
        f"{entry['label']}: sampling time ≤ 2× log_prob time",
        f'{ratio:.2f}×', 'met' if ratio <= 2 else 'not met'
    ])
    lp = r['log_prob'] / g['log_prob']
    target_rows.append([
        f"{entry['label']}: log_prob ≥ 1.5× tfb.Glow images/s",
        f'{lp:.2f}×', 'met' if lp >= 1.5 else 'not met'
    ])
    achieved = _achieved(entry, 'ours', 'train')
    target_rows.append([
        f"{entry['label']}: train step ≥ 30% of the matmul peak",
        f'{100 * achieved / peak:.1f}% ({achieved:.0f} of {peak:.0f} GFLOP/s)',
        'met' if achieved / peak >= 0.3 else 'not met'
    ])
  md.append('### Targets')
  md.append('')
  md.append(_common.markdown_table(['target', 'measured', 'verdict'],
                                   target_rows, align=['l', 'r', 'l']))
  md.append('')

  for headers_, rows_ in ((headers, rows), (ratio_headers, ratio_rows),
                          (mixed_headers, mixed_rows),
                          (kernel_headers, kernel_rows),
                          (elementwise_headers, elementwise_rows),
                          (core_headers, core_rows),
                          (call_headers, call_rows),
                          (flop_headers, flop_rows), (mix_headers, mix_rows),
                          (['target', 'measured', 'verdict'], target_rows)):
    out.append(_common.text_table(headers_, rows_))
    out.append('')
  return '\n'.join(out), '\n'.join(md)


def main(argv):
  if _common.run_as_worker(argv, worker_main):
    return 0
  parser = _common.base_parser(
      __doc__.split('\n\n')[0], 'speed',
      'Smoke run: tiny model, short timings, no doc.')
  parser.add_argument('--models', default='',
                      help='Comma-separated config names to run (default all).')
  parser.add_argument('--min_seconds', type=float, default=6.,
                      help='Minimum timed seconds per measurement.')
  parser.add_argument('--noprofile', dest='profile', action='store_false',
                      help='Skip the TF profiler traces.')
  args = parser.parse_args(argv[1:])
  command = _common.reproduce_command('speed.py', argv)
  results = run(args)
  text, markdown = report(results, command)
  print(text)
  doc = _common.output_doc(args)
  if doc:
    _common.update_doc_section('speed', markdown, doc)
    print(f'wrote the speed section of {doc}')
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv))
