"""SavedModel export for TF Serving: tfp_flowpp.export, bin/export, docs.

A tiny model is trained for a few steps once per module, exported with
``bin/export`` (as a user would), and the export is checked

* with ``saved_model_cli show`` / ``run`` (subprocesses);
* loaded in a fresh process that does not import tfp_flowpp, against the
  in-process model (seeded IW bound, samples, encode/decode, the noisy
  single-sample bound, the continuous density);
* with the REST request/response examples of docs/serving.md, converted the
  way TF Serving converts JSON;
* as a differentiable prior inside another TF computation;
* with bad inputs (clear errors, no NaN) and bin/export failures (one-line
  error, nothing half-written).
"""

import concurrent.futures
import io
import json
import math
import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

import configs_util
from tfp_flowpp import data as data_lib
from tfp_flowpp import export
from tfp_flowpp import training
from tfp_flowpp.export import saved_model as saved_model_lib
from tfp_flowpp.networks import blocks

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPORT_BIN = os.path.join(REPO, 'bin', 'export')
DOCS = os.path.join(REPO, 'docs', 'serving.md')
SAVED_MODEL_CLI = os.path.join(os.path.dirname(sys.executable),
                               'saved_model_cli')
SHAPE = (8, 8, 1)
LEVELS = 17
NUM_DIMS = 64
SEED = [7, 8]
SAMPLE_ARGS = dict(num_samples=35, temperature=0.7, seed=[3, 4])  # 2 chunks.
SERVING_CALLS = 12


def _env():
  env = dict(os.environ)
  env.pop('PYTHONPATH', None)  # The fresh process must not need tfp_flowpp.
  env['TF_CPP_MIN_LOG_LEVEL'] = '2'
  return env


def _run(args, **kwargs):
  return subprocess.run(args, capture_output=True, text=True, timeout=300,
                        **kwargs)


def _export_args(*flags):
  # bin/export finds tfp_flowpp next to itself; only `python` must be the
  # venv's (its shebang is `/usr/bin/env python3`).
  return [sys.executable, EXPORT_BIN, *flags]


class _Background:
  """Subprocesses started early, ``workers`` at a time (2 cores here)."""

  def __init__(self, workers=1):
    self.pool = concurrent.futures.ThreadPoolExecutor(workers)
    self.jobs = {}
    self.data = {}

  def start(self, name, args, **kwargs):
    kwargs.setdefault('env', _env())
    self.jobs[name] = self.pool.submit(_run, args, **kwargs)

  def result(self, name):
    return self.jobs[name].result()

  def stop(self):
    self.pool.shutdown(wait=True, cancel_futures=True)


# Fixtures ----------------------------------------------------------------------


@pytest.fixture(scope='module')
def early(tmp_path_factory):
  """Subprocesses that need no trained model: they overlap the training."""
  background = _Background(workers=1)
  tmp = tmp_path_factory.mktemp('early')
  background.data['missing'] = tmp
  background.start('missing_workdir', _export_args(
      f'--workdir={tmp / "nope"}', f'--export_dir={tmp / "models"}'))
  yield background
  background.stop()


@pytest.fixture(scope='module')
def workdir(early, tmp_path_factory):
  del early  # Started first.
  path = str(tmp_path_factory.mktemp('workdir'))
  model_config = configs_util.tiny_model_config(
      flow='stripe:2 squeeze channel:2', dequantizer_flow='stripe:2')
  train_config = training.TrainConfig(
      train_steps=4, batch_size=16, init_batch_size=32, eval_every=4,
      checkpoint_every=4, log_every=2, num_sample_images=4,
      test_num_samples=2, eval_batch_size=512, max_eval_images=64)
  training.Trainer(model_config, data_lib.DataConfig(dataset='digits'),
                   train_config, path, stream=io.StringIO()).run()
  return path


@pytest.fixture(scope='module')
def exported(workdir):
  """``bin/export --workdir=W``: the default export dir and version."""
  result = _run(_export_args(f'--workdir={workdir}'), env=_env())
  assert result.returncode == 0, result.stderr[-2000:]
  export_dir = os.path.join(workdir, 'export')
  version_dir = os.path.join(export_dir, '1')
  assert f'to {version_dir} (' in result.stdout
  assert os.listdir(export_dir) == ['1']
  return version_dir


@pytest.fixture(scope='module')
def model(workdir):
  model, _, step = training.restore_for_inference(workdir)
  assert step == 4
  return model


@pytest.fixture(scope='module')
def loaded(exported, background):
  del background  # Start the subprocess checks first; they run meanwhile.
  return tf.saved_model.load(exported)


@pytest.fixture(scope='module')
def images():
  test = data_lib.load_dataset(data_lib.DataConfig(dataset='digits')).arrays(
      'test')
  assert test.dtype == np.uint8 and test.shape[1:] == SHAPE
  return test[:32]


_FRESH_SCRIPT = textwrap.dedent('''
    import sys
    import numpy as np
    import tensorflow as tf

    version_dir, inputs_path, out_path = sys.argv[1:]
    inputs = np.load(inputs_path)
    images = tf.constant(inputs['images'])
    m = tf.saved_model.load(version_dir)
    sig = m.signatures
    out = {}
    seed = tf.constant(inputs['seed'])
    seeded = m.importance_weighted_log_prob_seeded(images, tf.constant(4), seed)
    out['iw_seeded'] = seeded['log_prob'].numpy()
    out['iw_seeded_bits_per_dim'] = seeded['bits_per_dim'].numpy()
    out['iw_seeded_again'] = m.importance_weighted_log_prob_seeded(
        images=images, num_samples=tf.constant(4),
        seed=seed)['log_prob'].numpy()
    iw = sig['importance_weighted_log_prob'](images=images,
                                             num_samples=tf.constant(4))
    out['iw_log_prob'] = iw['log_prob'].numpy()
    out['iw_bits_per_dim'] = iw['bits_per_dim'].numpy()
    def sample(seed):
      return sig['sample'](
          num_samples=tf.constant(int(inputs['num_samples'])),
          temperature=tf.constant(float(inputs['temperature'])),
          seed=tf.constant(seed))['images'].numpy()
    out['samples'] = sample(inputs['sample_seed'])
    out['samples_again'] = sample(inputs['sample_seed'])
    out['samples_other_seed'] = sample(inputs['sample_seed'] + 1)
    out['latents'] = sig['encode'](images=images)['latents'].numpy()
    out['decoded'] = sig['decode'](
        latents=tf.constant(out['latents']))['images'].numpy()
    calls = [sig['serving_default'](images=images)
             for _ in range(int(inputs['serving_calls']))]
    out['serving_log_prob'] = np.stack([c['log_prob'].numpy() for c in calls])
    out['serving_bits_per_dim'] = np.stack(
        [c['bits_per_dim'].numpy() for c in calls])
    out['log_prob_signature'] = sig['log_prob'](images=images)[
        'log_prob'].numpy()
    out['flow_log_prob'] = m.flow_log_prob(
        tf.constant(inputs['y'])).numpy()
    assert 'tfp_flowpp' not in sys.modules
    np.savez(out_path, **out)
    print('fresh process ok')
''')


@pytest.fixture(scope='module')
def background(exported, images, tmp_path_factory):
  """Starts, in parallel, every subprocess that checks the export."""
  tmp = tmp_path_factory.mktemp('background')
  background = _Background()
  # A fresh process that loads the export without tfp_flowpp.
  (tmp / 'fresh.py').write_text(_FRESH_SCRIPT)
  y = images[:8].astype(np.float32) + np.random.default_rng(0).uniform(
      size=(8,) + SHAPE).astype(np.float32)
  np.savez(tmp / 'inputs.npz', images=images, seed=np.array(SEED, np.int32),
           num_samples=SAMPLE_ARGS['num_samples'],
           temperature=SAMPLE_ARGS['temperature'],
           sample_seed=np.array(SAMPLE_ARGS['seed'], np.int32),
           serving_calls=SERVING_CALLS, y=y)
  background.data.update(y=y, out=tmp / 'out.npz')
  background.start('fresh', [sys.executable, str(tmp / 'fresh.py'), exported,
                             str(tmp / 'inputs.npz'), str(tmp / 'out.npz')],
                   cwd=str(tmp))
  # saved_model_cli show / run.
  background.start('show', [SAVED_MODEL_CLI, 'show', '--all', '--dir',
                            exported])
  cli_images = np.zeros((2,) + SHAPE, np.uint8)
  cli_images[1] = LEVELS - 1
  np.save(tmp / 'images.npy', cli_images)
  background.start('run_serving_default', [
      SAVED_MODEL_CLI, 'run', '--dir', exported, '--tag_set', 'serve',
      '--signature_def', 'serving_default', '--inputs',
      f'images={tmp / "images.npy"}'])
  background.start('run_sample', [
      SAVED_MODEL_CLI, 'run', '--dir', exported, '--tag_set', 'serve',
      '--signature_def', 'sample', '--input_exprs',
      'num_samples=3;temperature=0.8;seed=[1,2]'])
  # bin/export onto the existing version.
  export_dir = os.path.dirname(exported)
  background.data['version_1_before'] = _snapshot(exported)
  background.start('existing_version', _export_args(
      f'--workdir={os.path.dirname(export_dir)}', f'--export_dir={export_dir}',
      '--version=1'))
  yield background
  background.stop()


def _snapshot(directory):
  return {name: os.stat(os.path.join(directory, name)).st_mtime_ns
          for name in sorted(os.listdir(directory))}


@pytest.fixture(scope='module')
def fresh(background):
  """Everything the loaded model computes in a process without tfp_flowpp."""
  result = background.result('fresh')
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'fresh process ok' in result.stdout
  out = dict(np.load(background.data['out']))
  out['y'] = background.data['y']
  return out


# REST examples of docs/serving.md -----------------------------------------------


def _docs_examples():
  with open(DOCS) as f:
    text = f.read()
  found = re.findall(
      r'<!-- serving-example: (.+?) -->\s*```json\n(.*?)```', text, re.S)
  return {name: json.loads(body) for name, body in found}


def _json_shape(value):
  """TF Serving's dense shape of a JSON value: sizes of the first elements."""
  shape = []
  while isinstance(value, list):
    shape.append(len(value))
    value = value[0] if value else None
  return shape


def _json_leaves(value, shape, level=0):
  if level == len(shape):
    assert not isinstance(value, list), 'list nested deeper than the shape'
    return [value]
  assert isinstance(value, list) and len(value) == shape[level], (
      f'ragged JSON tensor at level {level}')
  return [leaf for item in value
          for leaf in _json_leaves(item, shape, level + 1)]


def _json_to_tensor(value, spec):
  """One named input as TF Serving's REST API converts it (json_tensor.cc)."""
  shape = _json_shape(value)
  leaves = _json_leaves(value, shape)
  if spec.dtype.is_integer:
    # JSON ints only; stored via int_val, so uint8 wraps (no range check).
    assert all(isinstance(v, int) and not isinstance(v, bool)
               for v in leaves), f'{spec.name}: expected JSON integers'
    array = np.array(leaves, np.int64).astype(spec.dtype.as_numpy_dtype)
  elif spec.dtype.is_floating:
    assert all(isinstance(v, (int, float)) and not isinstance(v, bool)
               for v in leaves), f'{spec.name}: expected JSON numbers'
    array = np.array(leaves, spec.dtype.as_numpy_dtype)
  else:
    raise AssertionError(f'unexpected dtype {spec.dtype}')
  return tf.constant(array.reshape(shape), spec.dtype)


def _predict(loaded, request):
  """A columnar REST ``:predict`` request through the loaded signature."""
  assert set(request) <= {'signature_name', 'inputs'}
  signature = loaded.signatures[request.get('signature_name',
                                            'serving_default')]
  specs = signature.structured_input_signature[1]
  inputs = request['inputs']
  assert sorted(inputs) == sorted(specs), 'named inputs must match'
  outputs = signature(**{name: _json_to_tensor(value, specs[name])
                         for name, value in inputs.items()})
  outputs = {name: tensor.numpy().tolist()
             for name, tensor in outputs.items()}
  # A single named output is not wrapped in an object (api_rest.md).
  if len(outputs) == 1:
    return {'outputs': next(iter(outputs.values()))}
  return {'outputs': outputs}


def _structure(value):
  if isinstance(value, dict):
    return {k: _structure(v) for k, v in value.items()}
  if isinstance(value, list):
    items = [_structure(v) for v in value]
    assert all(item == items[0] for item in items), 'ragged'
    return ('list', len(value), items[0] if items else None)
  return type(value).__name__


def test_docs_rest_examples_run_through_the_signatures(loaded):
  examples = _docs_examples()
  assert sorted(examples) == ['sample request', 'sample response',
                              'serving_default request',
                              'serving_default response']
  for name in ('serving_default', 'sample'):
    request = examples[f'{name} request']
    documented = examples[f'{name} response']
    response = _predict(loaded, request)
    json.dumps(response, allow_nan=False)  # Valid, NaN-free JSON.
    assert _structure(response) == _structure(documented), name

  log_prob = examples['serving_default response']['outputs']
  np.testing.assert_allclose(
      log_prob['bits_per_dim'],
      -np.array(log_prob['log_prob']) / (NUM_DIMS * math.log(2)), rtol=1e-4)
  images = np.array(examples['sample response']['outputs'])
  assert images.min() >= 0 and images.max() < LEVELS
  request = examples['sample request']
  assert isinstance(request['inputs']['num_samples'], int)  # A scalar.
  response = _predict(loaded, request)
  assert response == _predict(loaded, request)  # Seeded: reproducible.
  assert np.array(response['outputs']).shape == (
      request['inputs']['num_samples'],) + SHAPE


def test_docs_show_the_server_commands():
  with open(DOCS) as f:
    text = f.read()
  assert 'tensorflow_model_server --rest_api_port=8501 --model_name=flowpp' in text
  assert '--model_base_path=' in text
  assert 'tensorflow/serving' in text and 'target=/models/flowpp' in text
  assert 'http://localhost:8501/v1/models/flowpp:predict' in text


def test_readme_serving_section_links_the_serving_doc():
  with open(os.path.join(REPO, 'README.md')) as f:
    section = f.read().split('\n## Serving\n', 1)[1].split('\n## ', 1)[0]
  assert '(docs/serving.md)' in section
  assert 'bin/export --workdir=' in section
  assert '<!-- serving-example' not in section  # The tested copy is the doc's.


# The loaded model inside another TF computation ----------------------------------


def test_flow_log_prob_as_a_frozen_prior(loaded, model, images):
  rng = np.random.default_rng(1)
  observed = np.clip(
      images[:4].astype(np.float32) + 0.5 + rng.normal(
          0., 0.3, (4,) + SHAPE), 0.3, LEVELS - 0.3).astype(np.float32)
  y = tf.Variable(observed)
  weights_before = [v.numpy() for v in loaded.model_variables]
  sigma = 0.5

  @tf.function
  def loss_and_grads():
    with tf.GradientTape() as tape:  # Watches every trainable variable.
      prior = tf.reduce_sum(loaded.flow_log_prob(y))
      data = tf.reduce_sum((y - observed) ** 2) / (2 * sigma ** 2)
      loss = data - prior
    grad, *model_grads = tape.gradient(loss, [y] + loaded.model_variables)
    return loss, prior, grad, model_grads

  def loss_and_grad():
    return loss_and_grads()[:3]

  loss0, prior0, grad, model_grads = loss_and_grads()
  grad = grad.numpy()
  assert np.all(np.isfinite(grad)) and np.any(grad != 0)
  # Frozen: no gradient reaches the model's weights.
  assert len(model_grads) == len(loaded.model_variables) > 0
  for g in model_grads:
    assert g is None or not np.any(g.numpy())
  # The saved gradient is the model's gradient of log p.
  with tf.GradientTape() as tape:
    yy = tf.constant(observed)
    tape.watch(yy)
    local = tf.reduce_sum(model.continuous_log_prob(yy))
  np.testing.assert_allclose(-grad, tape.gradient(local, yy).numpy(),
                             rtol=1e-3, atol=1e-3)

  optimizer = tf_keras.optimizers.Adam(0.02)
  for _ in range(5):
    loss, prior, grad = loss_and_grad()
    optimizer.apply_gradients([(grad, y)])
  loss, prior, _ = loss_and_grad()
  assert float(prior) > float(prior0)
  assert float(loss) < float(loss0)
  assert not np.array_equal(y.numpy(), observed)
  for before, variable in zip(weights_before, loaded.model_variables):
    np.testing.assert_array_equal(variable.numpy(), before)

  # Outside [0, L]: -inf with a zero (not NaN) gradient.
  outside = tf.Variable(np.full((1,) + SHAPE, -1., np.float32))
  with tf.GradientTape() as tape:
    value = loaded.flow_log_prob(outside)
  assert value.numpy()[0] == -np.inf
  np.testing.assert_array_equal(tape.gradient(value, outside).numpy(), 0.)


# Bad inputs ------------------------------------------------------------------------


def _uint8(value, shape=(2,) + SHAPE):
  return tf.fill(shape, tf.constant(value, tf.uint8))


def _sample(n=2, temperature=1., seed=(1, 2)):
  return dict(num_samples=tf.constant(n, tf.int32),
              temperature=tf.constant(temperature, tf.float32),
              seed=tf.constant(seed, tf.int32))


_BAD_INPUTS = {
    'float images': ('serving_default',
                     lambda: dict(images=tf.zeros((2,) + SHAPE)),
                     'expected to be a uint8 tensor'),
    'int64 num_samples': ('importance_weighted_log_prob',
                          lambda: dict(images=_uint8(0),
                                       num_samples=tf.constant(2, tf.int64)),
                          'expected to be a int32 tensor'),
    'rank 3 images': ('serving_default', lambda: dict(images=_uint8(0, SHAPE)),
                      r'images must have shape \[batch, 8, 8, 1\].*'
                      r'got shape\] \[\[8, 8, 1\]\]'),
    'wrong image size': ('encode',
                         lambda: dict(images=_uint8(0, (2, 8, 9, 1))),
                         r'got shape\] \[\[2, 8, 9, 1\]\]'),
    'values >= L': ('serving_default', lambda: dict(images=_uint8(LEVELS)),
                    r'pixel values must be in \[0, 17\) for this 17-level'),
    'values >= L (iw)': ('importance_weighted_log_prob',
                         lambda: dict(images=_uint8(255),
                                      num_samples=tf.constant(2)),
                         r'pixel values must be in \[0, 17\)'),
    'values >= L (encode)': ('encode', lambda: dict(images=_uint8(20)),
                             r'pixel values must be in \[0, 17\)'),
    'NaN latents': ('decode',
                    lambda: dict(latents=tf.fill((2,) + SHAPE, np.nan)),
                    'latents must be finite'),
    'Inf latents': ('decode',
                    lambda: dict(latents=tf.fill((2,) + SHAPE, -np.inf)),
                    'latents must be finite'),
    'latents shape': ('decode', lambda: dict(latents=tf.zeros((2, 4, 4, 4))),
                      r'latents must have shape \[batch, 8, 8, 1\]'),
    'num_samples 0 (iw)': ('importance_weighted_log_prob',
                           lambda: dict(images=_uint8(0),
                                        num_samples=tf.constant(0)),
                           'num_samples must be an integer >= 1'),
    'num_samples 0 (sample)': ('sample', lambda: _sample(n=0),
                               'num_samples must be an integer >= 1'),
    'num_samples < 0': ('sample', lambda: _sample(n=-3),
                        'num_samples must be an integer >= 1'),
    'temperature 0': ('sample', lambda: _sample(temperature=0.),
                      'temperature must be > 0'),
    'temperature < 0': ('sample', lambda: _sample(temperature=-1.),
                        'temperature must be > 0'),
    'temperature NaN': ('sample', lambda: _sample(temperature=np.nan),
                        'temperature must be finite'),
    'temperature Inf': ('sample', lambda: _sample(temperature=np.inf),
                        'temperature must be finite'),
}


@pytest.mark.parametrize('case', sorted(_BAD_INPUTS))
def test_bad_inputs_fail_clearly(loaded, case):
  signature, make_inputs, message = _BAD_INPUTS[case]
  with pytest.raises(tf.errors.InvalidArgumentError, match=message):
    loaded.signatures[signature](**make_inputs())


def test_shape_checks_run_in_the_graph(loaded):
  # TF Serving feeds request tensors without checking the signature's
  # shape; emulate that by calling from a graph with an unknown shape.
  signature = loaded.signatures['serving_default']

  @tf.function(input_signature=[tf.TensorSpec(None, tf.uint8)])
  def unchecked(x):
    return signature(images=x)['log_prob']

  for shape in [(8, 8, 1), (1, 8, 8, 3), (1, 1, 8, 8, 1)]:
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match='images must have shape'):
      unchecked(tf.zeros(shape, tf.uint8))


def test_edge_inputs_give_valid_outputs(loaded):
  sig = loaded.signatures
  empty = sig['serving_default'](images=_uint8(0, (0,) + SHAPE))
  assert empty['log_prob'].shape == (0,) and empty['bits_per_dim'].shape == (0,)
  assert sig['importance_weighted_log_prob'](
      images=_uint8(0, (0,) + SHAPE),
      num_samples=tf.constant(3))['log_prob'].shape == (0,)
  assert sig['encode'](images=_uint8(0, (0,) + SHAPE))['latents'].shape == (
      (0,) + SHAPE)
  assert sig['decode'](latents=tf.zeros((0,) + SHAPE))['images'].shape == (
      (0,) + SHAPE)
  edge = sig['serving_default'](images=_uint8(LEVELS - 1))['log_prob']
  assert np.all(np.isfinite(edge.numpy()))
  # Extreme but finite latents / temperatures: valid images, never garbage.
  huge = sig['decode'](latents=tf.fill((2,) + SHAPE, 1e30))['images'].numpy()
  hot = sig['sample'](**_sample(temperature=1e6))['images'].numpy()
  for out in (huge, hot):
    assert out.dtype == np.uint8 and out.max() < LEVELS


# Export directory handling ------------------------------------------------------------


def test_metadata(exported, workdir):
  metadata = export.read_metadata(exported)
  assert metadata['format'] == export.FORMAT
  assert metadata['image_shape'] == list(SHAPE)
  assert metadata['num_levels'] == LEVELS
  assert metadata['step'] == 4
  assert metadata['signatures'] == list(export.SIGNATURE_NAMES)
  with open(os.path.join(workdir, 'config.json')) as f:
    assert metadata['config'] == json.load(f)


def test_saved_graphs_hold_only_tensorflow_ops(exported, model):
  # Trained and restored here with the fused attention kernel (a custom op
  # of this machine); the SavedModel must run wherever TensorFlow does.
  from tensorflow.core.protobuf import saved_model_pb2  # pylint: disable=g-import-not-at-top,g-direct-tensorflow-import
  assert any(isinstance(m, blocks.GatedAttentionBlock)
             for m in model.submodules)
  saved = saved_model_pb2.SavedModel()
  with open(os.path.join(exported, 'saved_model.pb'), 'rb') as f:
    saved.ParseFromString(f.read())
  graph = saved.meta_graphs[0].graph_def
  ops = {node.op for node in graph.node}
  for function in graph.library.function:
    ops.update(node.op for node in function.node_def)
  assert 'Softmax' in ops  # The attention is there, as TensorFlow ops.
  assert not {op for op in ops if op.startswith('Flowpp')}, ops


def test_versions(tmp_path):
  root = str(tmp_path / 'models')
  assert export.next_version(root) == 1
  os.makedirs(os.path.join(root, '3'))
  os.makedirs(os.path.join(root, '.tmp-9-abc'))
  os.makedirs(os.path.join(root, 'v10'))
  with open(os.path.join(root, '12'), 'w'):
    pass  # A file, not a version.
  assert export.existing_versions(root) == [3]
  assert export.next_version(root) == 4
  assert export.resolve_version(root) == 4
  assert export.resolve_version(root, 7) == 7
  with pytest.raises(export.ExportError, match='already exists.*--version=4'):
    export.resolve_version(root, 3)
  for bad in (0, -1, True, '5', 2.0):
    with pytest.raises(export.ExportError, match='positive integer'):
      export.resolve_version(root, bad)
  with pytest.raises(export.ExportError, match='not a directory'):
    export.resolve_version(os.path.join(root, '12'))


@pytest.mark.parametrize('failure', ['error', 'interrupt', 'race'])
def test_failed_export_leaves_nothing_behind(model, tmp_path, monkeypatch,
                                            failure):
  root = tmp_path / 'models'
  (root / '1').mkdir(parents=True)
  (root / '1' / 'keep').write_text('v1')

  def fake_save(module, path, signatures=None):
    del module, signatures
    with open(os.path.join(path, 'saved_model.pb'), 'wb') as f:
      f.write(b'partial')
    if failure == 'error':
      raise OSError('disk full')
    if failure == 'interrupt':
      raise KeyboardInterrupt
    (root / '2').mkdir()  # A concurrent export publishes version 2 first.
    (root / '2' / 'other').write_text('theirs')

  monkeypatch.setattr(saved_model_lib, 'make_serving_module',
                      lambda model, decode_batch_size: (tf.Module(), {}))
  monkeypatch.setattr(saved_model_lib.tf.saved_model, 'save', fake_save)
  expected = {'error': (OSError, 'disk full'),
              'interrupt': (KeyboardInterrupt, None),
              'race': (export.ExportError, 'appeared while exporting')}
  error, message = expected[failure]
  with pytest.raises(error, match=message):
    export.export_saved_model(model, str(root))
  names = sorted(os.listdir(root))
  assert names == (['1', '2'] if failure == 'race' else ['1'])
  assert (root / '1' / 'keep').read_text() == 'v1'
  if failure == 'race':
    assert os.listdir(root / '2') == ['other']


def test_bad_metadata_writes_nothing(model, tmp_path):
  with pytest.raises(export.ExportError, match='JSON'):
    export.export_saved_model(model, str(tmp_path / 'models'),
                              metadata={'bad': object()})
  assert not (tmp_path / 'models').exists()


# saved_model_cli -----------------------------------------------------------------

_EXPECTED_SIGNATURES = {
    'serving_default': (
        {'images': ('DT_UINT8', '(-1, 8, 8, 1)')},
        {'log_prob': ('DT_FLOAT', '(-1)'),
         'bits_per_dim': ('DT_FLOAT', '(-1)')}),
    'importance_weighted_log_prob': (
        {'images': ('DT_UINT8', '(-1, 8, 8, 1)'),
         'num_samples': ('DT_INT32', '()')},
        {'log_prob': ('DT_FLOAT', '(-1)'),
         'bits_per_dim': ('DT_FLOAT', '(-1)')}),
    'sample': (
        {'num_samples': ('DT_INT32', '()'),
         'temperature': ('DT_FLOAT', '()'),
         'seed': ('DT_INT32', '(2)')},
        {'images': ('DT_UINT8', '(-1, 8, 8, 1)')}),
    'encode': (
        {'images': ('DT_UINT8', '(-1, 8, 8, 1)')},
        {'latents': ('DT_FLOAT', '(-1, 8, 8, 1)')}),
    'decode': (
        {'latents': ('DT_FLOAT', '(-1, 8, 8, 1)')},
        {'images': ('DT_UINT8', '(-1, 8, 8, 1)')}),
}
_EXPECTED_SIGNATURES['log_prob'] = _EXPECTED_SIGNATURES['serving_default']


def _parse_show(text):
  """``saved_model_cli show --all`` → {name: (inputs, outputs, method)}."""
  parsed = {}
  tensor = re.compile(r"(inputs|outputs)\['(\w+)'\] tensor_info:\s*"
                      r'dtype: (\w+)\s*shape: (.*?)\s*name:')
  for block in text.split("signature_def['")[1:]:
    name = block.split("'", 1)[0]
    block = block.split('\n\n', 1)[0]
    inputs, outputs = {}, {}
    for kind, key, dtype, shape in tensor.findall(block):
      (inputs if kind == 'inputs' else outputs)[key] = (dtype, shape.strip())
    method = re.search(r'Method name is: (.*)', block).group(1).strip()
    parsed[name] = (inputs, outputs, method)
  return parsed


def test_saved_model_cli_show_lists_the_signatures(background):
  result = background.result('show')
  assert result.returncode == 0, result.stderr[-2000:]
  parsed = _parse_show(result.stdout)
  parsed.pop('__saved_model_init_op', None)
  assert sorted(parsed) == sorted(_EXPECTED_SIGNATURES)
  for name, (inputs, outputs) in _EXPECTED_SIGNATURES.items():
    assert parsed[name] == (inputs, outputs, 'tensorflow/serving/predict'), name


def test_saved_model_cli_run(background, model):
  result = background.result('run_serving_default')
  assert result.returncode == 0, result.stderr[-2000:]
  for key in ('log_prob', 'bits_per_dim'):
    match = re.search(rf'Result for output key {key}:\s*\[([^\]]*)\]',
                      result.stdout)
    assert match, result.stdout
    values = np.array(match.group(1).split(), np.float64)
    assert values.shape == (2,) and np.all(np.isfinite(values))
    assert np.all(values > 0) if key == 'bits_per_dim' else np.all(values < 0)

  result = background.result('run_sample')
  assert result.returncode == 0, result.stderr[-2000:]
  expected = model.sample(3, seed=[1, 2], temperature=0.8).numpy().astype(
      np.uint8)
  assert f'Result for output key images:\n{expected}' in result.stdout


# Fresh process vs the in-process model --------------------------------------------


def test_seeded_importance_weighted_bound_matches(fresh, model, images):
  expected = model.importance_weighted_log_prob(
      tf.constant(images, tf.int32), 4, seed=SEED).numpy()
  # Relative: the bound is ~ -1e2..-1e3 nats, where float32 resolves ~1e-5.
  np.testing.assert_allclose(fresh['iw_seeded'], expected, rtol=1e-5)
  np.testing.assert_allclose(fresh['iw_seeded_bits_per_dim'],
                             model.nats_to_bits_per_dim(expected), atol=1e-5)
  np.testing.assert_array_equal(fresh['iw_seeded'], fresh['iw_seeded_again'])


def test_importance_weighted_signature_is_a_plausible_bound(fresh, images):
  log_prob, bpd = fresh['iw_log_prob'], fresh['iw_bits_per_dim']
  assert log_prob.shape == bpd.shape == (len(images),)
  assert np.all(np.isfinite(log_prob)) and np.all(log_prob < 0)
  np.testing.assert_allclose(bpd, -log_prob / (NUM_DIMS * math.log(2)),
                             rtol=1e-5)
  # Fresh noise, but the same bound: close to the seeded evaluation, and
  # not identical to it.
  assert not np.array_equal(log_prob, fresh['iw_seeded'])
  spread = np.std(fresh['serving_log_prob'], axis=0).mean()
  assert abs(log_prob.mean() - fresh['iw_seeded'].mean()) < 3 * spread + 1.
  # k = 4 is at least as tight as one sample, on average.
  assert log_prob.mean() > fresh['serving_log_prob'].mean() - 3 * spread


def test_samples_match_in_process_sampling(fresh, model):
  expected = model.sample(
      SAMPLE_ARGS['num_samples'], seed=SAMPLE_ARGS['seed'],
      temperature=SAMPLE_ARGS['temperature']).numpy().astype(np.uint8)
  assert fresh['samples'].dtype == np.uint8
  assert fresh['samples'].shape == (SAMPLE_ARGS['num_samples'],) + SHAPE
  np.testing.assert_array_equal(fresh['samples'], expected)
  np.testing.assert_array_equal(fresh['samples_again'], fresh['samples'])
  assert not np.array_equal(fresh['samples_other_seed'], fresh['samples'])
  assert fresh['samples'].max() < LEVELS


def test_encode_decode_match(fresh, model, images):
  latents = model.encode(tf.constant(images, tf.int32)).numpy()
  np.testing.assert_allclose(fresh['latents'], latents, rtol=1e-4, atol=1e-4)
  assert fresh['decoded'].dtype == np.uint8
  np.testing.assert_array_equal(fresh['decoded'], images)
  np.testing.assert_array_equal(
      fresh['decoded'],
      model.decode(tf.constant(fresh['latents'])).numpy().astype(np.uint8))


def test_serving_default_is_the_noisy_single_sample_bound(fresh, model,
                                                          images):
  served = fresh['serving_log_prob']  # [calls, images]
  assert np.all(np.isfinite(served)) and np.all(served < 0)
  assert not np.array_equal(served[0], served[1])  # Fresh noise per call.
  np.testing.assert_allclose(fresh['serving_bits_per_dim'],
                             -served / (NUM_DIMS * math.log(2)), rtol=1e-5)
  x = tf.constant(images, tf.int32)
  local = np.stack([model.log_prob(x).numpy() for _ in range(SERVING_CALLS)])
  # Same images, independent noise: the per-call means differ only by it.
  a, b = served.mean(axis=1), local.mean(axis=1)
  tolerance = 5 * math.sqrt(a.var() / len(a) + b.var() / len(b)) + 1e-3 * abs(
      b.mean())
  assert abs(a.mean() - b.mean()) < tolerance
  assert np.all(np.isfinite(fresh['log_prob_signature']))


def test_flow_log_prob_matches_continuous_density(fresh, model):
  expected = model.continuous_log_prob(tf.constant(fresh['y'])).numpy()
  np.testing.assert_allclose(fresh['flow_log_prob'], expected, rtol=1e-5)


# bin/export errors ----------------------------------------------------------------------


def _assert_one_line_error(result, pattern):
  assert result.returncode == 1, result.stderr[-2000:]
  assert 'Traceback' not in result.stderr
  lines = [l for l in result.stderr.splitlines() if l.strip()]
  errors = [l for l in lines if l.startswith('export: error:')]
  assert len(errors) == 1 and lines[-1] == errors[0], result.stderr[-2000:]
  assert re.search(pattern, errors[0]), errors[0]


def test_bin_export_refuses_an_existing_version(background, exported):
  result = background.result('existing_version')
  _assert_one_line_error(result, r'export/1 already exists.*--version=2')
  # Version 1 untouched, and no temporary directory left either.
  assert os.listdir(os.path.dirname(exported)) == ['1']
  assert _snapshot(exported) == background.data['version_1_before']


def test_bin_export_missing_workdir(early):
  result = early.result('missing_workdir')
  _assert_one_line_error(result, 'is not a tfp_flowpp workdir')
  tmp = early.data['missing']
  assert not (tmp / 'models').exists() and not (tmp / 'nope').exists()
