"""Each coupling network runs exactly once per coupling per log_prob / sample.

TFP asks for ``inverse`` and ``inverse_log_det_jacobian`` separately; a naive
coupling would evaluate its network twice. We wrap every coupling network in
a counter and drive the public TFP entry points.
"""

import pytest
import tensorflow as tf

import configs_util
from tfp_flowpp import bijectors as fb
from tfp_flowpp import model_builder
from tfp_flowpp import testing


def _instrument(model):
  """((main couplings, dequantizer couplings), call log) for a `with`."""
  return testing.counting_network_calls(model.bijector, model.dequantizer)


def _model(**overrides):
  """configs/tiny.flags with a squeeze level and a checkerboard dequantizer."""
  config = configs_util.tiny_model_config(
      num_levels=16,
      flow='stripe:2 squeeze channel:2',
      dequantizer_flow='checkerboard:3',
      **overrides)
  return model_builder.build_model(config)


@pytest.mark.parametrize('mode', ['eager', 'tf_function'])
def test_continuous_log_prob_runs_each_network_once(mode):
  model = _model()
  with _instrument(model) as ((main, _), log):
    assert len(main) == 4
    y = tf.random.uniform([3, 4, 4, 1], 0., 16., seed=1)
    fn = model.flow.log_prob
    if mode == 'tf_function':
      fn = tf.function(fn)
    fn(y)
  assert len(log) == len(main)


def test_sample_runs_each_network_once():
  model = _model()
  with _instrument(model) as ((main, _), log):
    model.flow.sample(2, seed=[1, 2])
    assert len(log) == len(main)
    del log[:]
    model.sample(2, seed=[3, 4], temperature=0.7)
  assert len(log) == len(main)


def test_bound_runs_every_network_once():
  model = _model()
  with _instrument(model) as ((main, dequantizer), log):
    assert len(dequantizer) == 3
    x = tf.random.uniform([3, 4, 4, 1], 0, 16, dtype=tf.int32, seed=2)
    model.log_prob(x, seed=[5, 6])
  assert len(log) == len(main) + len(dequantizer)


def test_training_gradient_runs_each_network_once_forward():
  model = _model()
  x = tf.random.uniform([3, 4, 4, 1], 0, 16, dtype=tf.int32, seed=3)
  with _instrument(model) as ((main, dequantizer), log):
    with tf.GradientTape() as tape:
      loss = -tf.reduce_mean(model.log_prob(x, seed=[7, 8], training=True))
    tape.gradient(loss, model.trainable_variables)
  assert len(log) == len(main) + len(dequantizer)


def test_counting_restores_the_networks():
  model = _model()
  before = [c.network for c in model.bijector.submodules
            if isinstance(c, fb.CouplingBijector)]
  with _instrument(model) as ((main, _), _):
    assert all(c.network is not n for c, n in zip(main, before))
  assert [c.network for c in main] == before
