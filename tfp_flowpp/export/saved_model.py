"""SavedModel export of a `DiscreteImageFlow` for TF Serving.

`export_saved_model(model, export_dir)` writes ``export_dir/VERSION/`` (the
layout TF Serving's model server watches) with these signatures, all with
method ``tensorflow/serving/predict``:

================================  ==========================================
signature                         inputs → outputs
================================  ==========================================
``serving_default``, ``log_prob`` ``images`` uint8 [N, H, W, C] →
                                  ``log_prob``, ``bits_per_dim`` float32 [N]
                                  (single-sample dequantization bound, fresh
                                  noise on every call)
``importance_weighted_log_prob``  ``images``, ``num_samples`` int32 [] →
                                  ``log_prob``, ``bits_per_dim`` (fresh noise)
``sample``                        ``num_samples`` int32 [], ``temperature``
                                  float32 [], ``seed`` int32 [2] →
                                  ``images`` uint8 [N, H, W, C]
``encode``                        ``images`` → ``latents`` float32 [N, H, W, C]
``decode``                        ``latents`` → ``images`` uint8 [N, H, W, C]
================================  ==========================================

A class-conditional model (``model.num_classes`` set) is exported as
p(x | y): every signature also takes ``labels`` int32 [N] (class indices
0..K−1, one per image, latent or sample; for ``sample`` N must equal
``num_samples``), and ``flow_log_prob`` takes ``(y, labels)``. The metadata
records ``num_classes``, ``class_labels`` (the data set label of each class
index) and ``class_names``.

Every input is validated inside the graph, so a bad request fails with an
``InvalidArgumentError`` naming the input (pixel values ≥ L, non-finite
latents, ``num_samples < 1``, ``temperature ≤ 0``, a wrong image shape) —
never a crash or a silent NaN; so are the labels (a class index outside
[0, K), or not one label per image). Outputs are checked to be finite as well.

Two more `tf.function`s are saved on the object (not as signatures, so they
are for Python/TF users of ``tf.saved_model.load``, not for the server):

* ``importance_weighted_log_prob_seeded(images, num_samples, seed)`` — the
  same bound with a stateless ``seed`` (int32 [2]): reproducible;
* ``flow_log_prob(y)`` — ``log p(y)`` of the continuous flow at ``y``
  float32 [N, H, W, C] in [0, L]^D, differentiable in ``y`` (``-inf``, with
  zero gradient, for images with a value outside [0, L]). The model is
  frozen: the saved (custom) gradient is zero for its weights, the loaded
  object's ``model_variables``.

The export is atomic: it is written to a hidden temporary directory inside
``export_dir`` (ignored by the model server, whose versions are integer
directory names) and renamed to ``export_dir/VERSION`` only when complete.
An existing version is never overwritten. ``assets.extra/flowpp.json``
describes the model (image shape, levels, dtype, the precision its networks
compute in (`precision.policy_of`), signatures, plus the caller's
``metadata`` such as the configs and the training step); the model server
ignores ``assets.extra``.
"""

import datetime
import json
import math
import os
import shutil
import tempfile

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

import tfp_flowpp
from tfp_flowpp import precision
from tfp_flowpp.distributions import discrete_image_flow
from tfp_flowpp.export import versions
from tfp_flowpp.networks import blocks

__all__ = ['export_saved_model', 'make_serving_module', 'read_metadata',
           'FORMAT', 'FUNCTION_NAMES', 'METADATA_PATH', 'SIGNATURE_NAMES']

FORMAT = 'tfp_flowpp.saved_model/1'
SIGNATURE_NAMES = ('serving_default', 'log_prob',
                   'importance_weighted_log_prob', 'sample', 'encode',
                   'decode')
FUNCTION_NAMES = ('importance_weighted_log_prob_seeded', 'flow_log_prob')
# Relative to the version directory.
METADATA_PATH = os.path.join('assets.extra', 'flowpp.json')

_INT32_MIN = -2**31
_INT32_MAX = 2**31 - 1


def _fresh_seed():
  """A stateless seed drawn from a non-deterministically seeded stateful op.

  ``seed = seed2 = 0`` asks the kernel for a random seed, independent of any
  ``tf.random.set_seed`` at export time, so every server process (and every
  call) gets new dequantization noise.
  """
  return tf.raw_ops.RandomUniformInt(
      shape=tf.constant([2], tf.int32), minval=tf.constant(_INT32_MIN),
      maxval=tf.constant(_INT32_MAX), seed=0, seed2=0)


class _Checks:
  """In-graph input/output validation with messages naming the input."""

  def __init__(self, model):
    self.shape = tuple(model.image_shape)
    self.levels = model.num_levels
    self.shape_text = 'x'.join(map(str, self.shape))
    self.num_classes = model.num_classes

  def assert_shape(self, name, x):
    """Run-time shape (and rank) check; the message shows the shape seen.

    The signature declares [None, H, W, C], but TF Serving feeds request
    tensors without checking that, so the graph checks it. Comparing the
    shape as a string keeps the check from being constant-folded away (the
    static shape is known) and handles any rank.
    """
    shape = tf.strings.reduce_join(tf.strings.as_string(tf.shape(x)),
                                   separator=', ')
    ok = tf.strings.regex_full_match(
        shape, '[0-9]+, ' + ', '.join(map(str, self.shape)))
    return tf.debugging.Assert(ok, [
        f'{name} must have shape [batch, {", ".join(map(str, self.shape))}] '
        f'for this {self.shape_text} model; got shape',
        tf.strings.join(['[', shape, ']'])])

  def images(self, images):
    """uint8 images → int32, asserting the shape, then 0 <= value < L."""
    shape_check = self.assert_shape('images', images)
    # The range check reduces over the (assumed) 4 dimensions, so it must
    # only run once the shape is known to be right.
    with tf.control_dependencies([shape_check]):
      x = tf.cast(images, tf.int32)
      checks = [shape_check]
      if self.levels < 256:
        checks.append(tf.debugging.assert_less(
            x, tf.constant(self.levels, tf.int32),
            message=f'images: pixel values must be in [0, {self.levels}) for '
            f'this {self.levels}-level model; got values >= {self.levels}',
            summarize=8))
    with tf.control_dependencies(checks):
      return tf.identity(x)

  def finite(self, name, x, what='must be finite'):
    return tf.debugging.assert_all_finite(x, f'{name} {what}')

  def num_samples(self, k):
    check = tf.debugging.assert_greater_equal(
        k, tf.constant(1, tf.int32),
        message='num_samples must be an integer >= 1; got')
    with tf.control_dependencies([check]):
      return tf.identity(k)

  def labels(self, labels, n):
    """int32 labels: one per image (``n``) and in [0, K)."""
    k = self.num_classes
    checks = [
        tf.debugging.assert_equal(
            tf.size(labels), n,
            message='labels must hold one class index per image (or sample); '
            'got a different number of labels'),
        tf.debugging.assert_greater_equal(
            labels, 0, message=f'labels must be class indices in [0, {k}) for '
            f'this {k}-class model; got', summarize=8),
        tf.debugging.assert_less(
            labels, k, message=f'labels must be class indices in [0, {k}) for '
            f'this {k}-class model; got', summarize=8),
    ]
    with tf.control_dependencies(checks):
      return tf.identity(labels)

  def temperature(self, t):
    t = self.finite('temperature', t)  # First, so NaN reports as such.
    check = tf.debugging.assert_positive(
        t, message='temperature must be > 0; got')
    with tf.control_dependencies([check]):
      return tf.identity(t)


def _map_chunks(fn, x, chunk, event_shape, labels=None):
  """``fn(x[, labels])`` for ``x`` [N, *event_shape], in static-size chunks.

  ``N`` is padded with zeros to a multiple of ``chunk`` and the chunks run
  one after the other, each with the fully static shape [chunk, *event]. The
  static shape matters: TFP's root finder (used by the mixture-logistic
  couplings' inverse) loses the static size of a size-1 dimension when the
  batch size is unknown, and `InvertibleConv1x1` then rejects its input.
  """
  n = tf.shape(x)[0]
  num_chunks = (n + chunk - 1) // chunk
  padded = tf.pad(x, [[0, num_chunks * chunk - n]] +
                  [[0, 0]] * len(event_shape))
  chunks = tf.reshape(padded, [num_chunks, chunk, *event_shape])
  spec = tf.TensorSpec([chunk, *event_shape], x.dtype)
  if labels is None:
    out = tf.map_fn(fn, chunks, parallel_iterations=1,
                    fn_output_signature=spec)
  else:
    label_chunks = tf.reshape(
        tf.pad(labels, [[0, num_chunks * chunk - n]]), [num_chunks, chunk])
    out = tf.map_fn(lambda args: fn(*args), (chunks, label_chunks),
                    parallel_iterations=1, fn_output_signature=spec)
  return tf.reshape(out, [-1, *event_shape])[:n]


def make_serving_module(model, decode_batch_size=32):
  """A `tf.Module` with the serving functions of ``model`` (not yet saved).

  Args:
    model: a `DiscreteImageFlow`.
    decode_batch_size: images per pass of the inverse flow in ``sample`` and
      ``decode`` (requests are padded to a multiple of it).

  Returns:
    ``(module, signatures)``: ``signatures`` maps each name of
    `SIGNATURE_NAMES` to a concrete function, for ``tf.saved_model.save``.

  Attention is traced with TensorFlow's ops and their own gradient
  (`networks.blocks.portable_attention`): the saved graphs hold no custom
  op (the fused CPU kernel is not part of TensorFlow, so TF Serving could
  not run it) and one custom gradient, ``flow_log_prob``'s, instead of one
  per attention call of every function.
  """
  with blocks.portable_attention():
    return _make_serving_module(model, decode_batch_size)


def _make_serving_module(model, decode_batch_size):
  if not isinstance(model, discrete_image_flow.DiscreteImageFlow):
    raise TypeError(f'export needs a DiscreteImageFlow, got {type(model)}.')
  if model.num_levels > 256:
    raise versions.ExportError(
        f'The serving signatures use uint8 images, but the model has '
        f'{model.num_levels} levels (> 256).')
  if isinstance(decode_batch_size, bool) or not isinstance(
      decode_batch_size, int) or decode_batch_size < 1:
    raise versions.ExportError('decode_batch_size must be a positive integer, '
                               f'got {decode_batch_size!r}.')
  h, w, c = model.image_shape
  float_dtype = model.float_dtype
  checks = _Checks(model)

  images_spec = tf.TensorSpec([None, h, w, c], tf.uint8, name='images')
  latents_spec = tf.TensorSpec([None, h, w, c], tf.float32, name='latents')
  y_spec = tf.TensorSpec([None, h, w, c], tf.float32, name='y')
  k_spec = tf.TensorSpec([], tf.int32, name='num_samples')
  temperature_spec = tf.TensorSpec([], tf.float32, name='temperature')
  seed_spec = tf.TensorSpec([2], tf.int32, name='seed')
  conditional = model.num_classes is not None
  # Conditional models: every signature takes `labels` last.
  label_specs = ([tf.TensorSpec([None], tf.int32, name='labels')]
                 if conditional else [])

  def labels_for(labels, x):
    return checks.labels(labels, tf.shape(x)[0]) if conditional else None

  def with_labels(fn, labels):
    # `fn(x)` as the unary function the helpers below map over.
    return fn if labels is None else lambda x: fn(x, labels=labels)

  def bound_outputs(bound):
    bound = tf.ensure_shape(tf.cast(bound, tf.float32), [None])
    with tf.control_dependencies([checks.finite(
        'log_prob', bound, 'is not finite (the model is numerically broken '
        'for these images)')]):
      bound = tf.identity(bound)
    return {'log_prob': bound,
            'bits_per_dim': tf.cast(model.nats_to_bits_per_dim(bound),
                                    tf.float32)}

  def decode_continuous(z, labels=None):
    # In fixed-size chunks: the inverse flow needs a static batch size (see
    # `_map_chunks`), and chunks bound the memory of large requests.
    if labels is None:
      return _map_chunks(model.decode_continuous, z, decode_batch_size,
                         (h, w, c))
    return _map_chunks(lambda z, y: model.decode_continuous(z, labels=y), z,
                       decode_batch_size, (h, w, c), labels)

  @tf.function(input_signature=[
      tf.TensorSpec([None, h, w, c], float_dtype, name='latents')] +
               label_specs)
  def to_uint8_images(z, labels=None):
    # Shared by `sample` and `decode` (one trace of the inverse flow).
    y = decode_continuous(z, labels)
    check = checks.finite('decoded values', y, 'are not finite (latents too '
                          'large for the flow?)')
    with tf.control_dependencies([check]):
      images = tf.cast(model.quantize(y), tf.uint8)
    return tf.ensure_shape(images, [None, h, w, c])

  def unless_empty(x, fn, result_shape=()):
    # A batch of zero images gets an empty result (the flow's networks
    # cannot run on an empty batch).
    return tf.cond(tf.shape(x)[0] > 0, lambda: fn(x),
                   lambda: tf.zeros([0, *result_shape], float_dtype))

  @tf.function(input_signature=[images_spec, k_spec, seed_spec] + label_specs)
  def importance_weighted_log_prob_seeded(images, num_samples, seed,
                                          labels=None):
    x = checks.images(images)
    k = checks.num_samples(num_samples)
    labels = labels_for(labels, x)
    return bound_outputs(unless_empty(
        x, lambda x: model.importance_weighted_log_prob(
            x, k, seed=seed, labels=labels)))

  # Traced once here and called as a concrete function below, so its graph
  # is shared (and serialised once) by the signature and the attribute.
  iw_seeded_fn = importance_weighted_log_prob_seeded.get_concrete_function()
  to_uint8_images_fn = to_uint8_images.get_concrete_function()

  @tf.function(input_signature=[images_spec] + label_specs)
  def log_prob(images, labels=None):
    x = checks.images(images)
    labels = labels_for(labels, x)
    return bound_outputs(unless_empty(
        x, lambda x: model.log_prob(x, seed=_fresh_seed(), labels=labels)))

  @tf.function(input_signature=[images_spec, k_spec] + label_specs)
  def importance_weighted_log_prob(images, num_samples, labels=None):
    if conditional:
      return iw_seeded_fn(images, num_samples, _fresh_seed(), labels)
    return iw_seeded_fn(images, num_samples, _fresh_seed())

  @tf.function(input_signature=[k_spec, temperature_spec, seed_spec] +
               label_specs)
  def sample(num_samples, temperature, seed, labels=None):
    n = checks.num_samples(num_samples)
    t = checks.temperature(temperature)
    # `DiscreteImageFlow.sample` = decode(sample_latents); decoded in chunks.
    if not conditional:
      return {'images': to_uint8_images_fn(model.sample_latents(n, seed, t))}
    labels = checks.labels(labels, n)
    z = model.sample_latents(n, seed, t, labels=labels)
    return {'images': to_uint8_images_fn(z, labels)}

  @tf.function(input_signature=[images_spec] + label_specs)
  def encode(images, labels=None):
    x = checks.images(images)
    labels = labels_for(labels, x)
    z = tf.cast(unless_empty(x, with_labels(model.encode, labels), (h, w, c)),
                tf.float32)
    with tf.control_dependencies([checks.finite('latents', z, 'are not '
                                                'finite')]):
      return {'latents': tf.ensure_shape(tf.identity(z), [None, h, w, c])}

  @tf.function(input_signature=[latents_spec] + label_specs)
  def decode(latents, labels=None):
    with tf.control_dependencies([checks.assert_shape('latents', latents)]):
      latents = checks.finite('latents', latents,
                              'must be finite (got NaN or Inf)')
    latents = tf.cast(latents, float_dtype)
    if not conditional:
      return {'images': to_uint8_images_fn(latents)}
    return {'images': to_uint8_images_fn(latents,
                                         labels_for(labels, latents))}

  def masked_log_prob(y, labels=None):
    levels = tf.constant(model.num_levels, float_dtype)
    inside = tf.reduce_all((y >= 0.) & (y <= levels), axis=[1, 2, 3])
    # Out-of-support images are evaluated at a safe point and masked, so
    # neither the value nor the gradient is NaN.
    safe_y = tf.where(inside[:, None, None, None], y, levels / 2.)
    log_p = unless_empty(safe_y, with_labels(model.continuous_log_prob,
                                             labels))
    return tf.where(inside, log_p, tf.constant(-math.inf, float_dtype))

  @tf.function(input_signature=[y_spec] + label_specs)
  def flow_log_prob(y, labels=None):
    check = checks.finite('y', y, 'must be finite (got NaN or Inf)')
    with tf.control_dependencies([check]):
      y = tf.identity(y)
    labels = labels_for(labels, y)

    # The model is frozen: the gradient goes to `y` only. Defining it here
    # also saves it with the function (SaveOptions.experimental_custom_
    # gradients), so a loaded model need not differentiate the flow's graph.
    @tf.custom_gradient
    def frozen(y):
      def grad(upstream, variables=None):
        # Traced when the SavedModel is written, outside make_serving_module.
        with tf.GradientTape() as tape, blocks.portable_attention():
          tape.watch(y)
          log_p = masked_log_prob(tf.cast(y, float_dtype), labels)
        # Images are independent: d(sum_i u_i log p_i)/dy.
        dy = tape.gradient(log_p, y, output_gradients=tf.cast(
            upstream, log_p.dtype))
        return dy, [tf.zeros_like(v) for v in variables or []]
      return tf.cast(masked_log_prob(tf.cast(y, float_dtype), labels),
                     tf.float32), grad

    return tf.ensure_shape(frozen(y), [None])

  module = tf.Module(name='flowpp_serving')
  # Only the weights are tracked (not the TFP object graph): the functions
  # capture them, and the loaded object exposes them as `model_variables`.
  module.model_variables = list(model.variables)
  # The signature functions are reachable as `loaded.signatures[name]`;
  # attaching them as attributes too would serialise each graph twice.
  module.importance_weighted_log_prob_seeded = iw_seeded_fn
  module.flow_log_prob = flow_log_prob

  log_prob_fn = log_prob.get_concrete_function()
  signatures = {
      'serving_default': log_prob_fn,
      'log_prob': log_prob_fn,
      'importance_weighted_log_prob':
          importance_weighted_log_prob.get_concrete_function(),
      'sample': sample.get_concrete_function(),
      'encode': encode.get_concrete_function(),
      'decode': decode.get_concrete_function(),
  }
  # Trace the other functions now too, so errors surface before anything is
  # written.
  flow_log_prob.get_concrete_function()
  return module, signatures


def _metadata(model, metadata, decode_batch_size):
  payload = {
      'format': FORMAT,
      'image_shape': list(model.image_shape),
      'num_levels': model.num_levels,
      'dtype': model.float_dtype.name,
      'precision': precision.policy_of(model),
      'signatures': list(SIGNATURE_NAMES),
      'functions': list(FUNCTION_NAMES),
      'decode_batch_size': decode_batch_size,
      'num_classes': model.num_classes,
      'exported_at': datetime.datetime.now(datetime.timezone.utc).isoformat(
          timespec='seconds'),
      'versions': {'tfp_flowpp': tfp_flowpp.__version__,
                   'tensorflow': tf.__version__,
                   'tensorflow_probability': tfp.__version__},
  }
  for key, value in (metadata or {}).items():
    payload[key] = value
  try:
    return json.dumps(payload, indent=2, sort_keys=True,
                      default=_json_default) + '\n'
  except (TypeError, ValueError) as e:
    raise versions.ExportError(f'metadata is not JSON-serialisable: {e}') from e


def _json_default(value):
  if isinstance(value, (np.integer, np.floating)):
    return value.item()
  if isinstance(value, (np.ndarray, tuple, set)):
    return list(value.tolist() if isinstance(value, np.ndarray) else value)
  raise TypeError(f'{type(value).__name__} is not JSON-serialisable')


def export_saved_model(model, export_dir, version=None, metadata=None,
                       decode_batch_size=32):
  """Writes ``model`` as ``export_dir/VERSION`` for TF Serving.

  Args:
    model: a `DiscreteImageFlow` holding the weights to export (e.g. the EMA
      weights from `training.restore_for_inference`).
    export_dir: the model base path (created if missing).
    version: positive integer; default one more than the largest existing.
    metadata: extra JSON-serialisable entries for ``assets.extra/flowpp.json``
      (e.g. ``{'config': configs, 'step': step}``).
    decode_batch_size: see `make_serving_module`.

  Returns:
    The absolute path of the new version directory.

  Raises:
    ExportError: the version exists or is invalid, or the metadata is not
      JSON (nothing is written then). On any error no version directory
      and no temporary directory is left behind.
  """
  export_dir = os.path.abspath(os.path.expanduser(os.fspath(export_dir)))
  version = versions.resolve_version(export_dir, version)
  metadata_text = _metadata(model, metadata, decode_batch_size)
  module, signatures = make_serving_module(model, decode_batch_size)
  os.makedirs(export_dir, exist_ok=True)
  final = versions.version_path(export_dir, version)
  tmp = tempfile.mkdtemp(prefix=f'.tmp-{version}-', dir=export_dir)
  try:
    tf.saved_model.save(module, tmp, signatures=signatures)
    metadata_file = os.path.join(tmp, METADATA_PATH)
    os.makedirs(os.path.dirname(metadata_file), exist_ok=True)
    with open(metadata_file, 'w') as f:
      f.write(metadata_text)
    os.chmod(tmp, 0o755)  # mkdtemp makes it 0700; servers may run as others.
    # Re-check just before publishing: another export may have taken it.
    if os.path.lexists(final):
      raise versions.ExportError(
          f'{final} appeared while exporting (a concurrent export?); '
          'nothing was overwritten.')
    try:
      os.rename(tmp, final)
    except OSError as e:
      raise versions.ExportError(
          f'Could not publish {final}: {e.strerror or e}') from e
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return final


def read_metadata(version_dir):
  """The ``assets.extra/flowpp.json`` dict of an exported version."""
  with open(os.path.join(version_dir, METADATA_PATH)) as f:
    return json.load(f)
