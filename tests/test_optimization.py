"""The optimizer's EMA warm-up: the averaged weights follow the closed form."""

import numpy as np
import pytest
import tensorflow as tf

from tfp_flowpp.training import config as train_config_lib
from tfp_flowpp.training import optimization


def _run(ema_warmup, steps=30, decay=0.999):
  config = train_config_lib.TrainConfig(
      learning_rate=0.1, warmup_steps=0, grad_clip_norm=0., ema_decay=decay,
      ema_warmup=ema_warmup)
  optimizer = optimization.make_optimizer(config)
  var = tf.Variable([1., -2.])
  optimizer.build([var])

  @tf.function
  def step(grad):
    optimizer.apply_gradients([(grad, var)])

  expected = var.numpy().astype(np.float64)
  rng = np.random.default_rng(0)
  for t in range(steps):
    step(tf.constant(rng.normal(size=2), tf.float32))
    momentum = min(decay, (1. + t) / (10. + t)) if ema_warmup else decay
    expected = momentum * expected + (1. - momentum) * var.numpy()
  average = optimizer._model_variables_moving_average[0].numpy()  # pylint: disable=protected-access
  return average, expected, var.numpy()


@pytest.mark.parametrize('ema_warmup,decay', [(True, 0.999), (True, 0.5),
                                               (False, 0.999)])
def test_ema_follows_closed_form(ema_warmup, decay):
  # decay 0.5: the warm-up hands over to the constant decay at t = 8.
  average, expected, _ = _run(ema_warmup, decay=decay)
  np.testing.assert_allclose(average, expected, rtol=1e-5, atol=1e-6)


def test_warmup_tracks_the_weights_early():
  # After 30 updates the warmed-up average sits near the current weights;
  # the constant 0.999 one is still 97% the initialisation.
  average, _, var = _run(True)
  plain, _, _ = _run(False)
  init = np.array([1., -2.])
  assert np.abs(average - var).max() < 0.5 * np.abs(init - var).max()
  assert np.abs(plain - init).max() < 0.05 * np.abs(init - var).max()
