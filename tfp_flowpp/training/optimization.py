"""The optimizer of a run: Adam with a warmup/decay learning-rate schedule.

`make_optimizer` builds the `tf_keras` Adam a `TrainConfig` describes
(global-norm clipping, EMA/Polyak weights). Its learning rate is a
`WarmupDecaySchedule`: linear warmup, then constant / exponential / cosine.
The schedule is a `tf_keras` `LearningRateSchedule` and serialises. A
trainer passes its step counter as ``step``: the schedule then follows it
rather than the optimizer's own iteration count, which does not advance on a
skipped (non-finite) step, so warmup and decay stay on the trainer's steps
and a cosine decay reaches its floor at ``train_steps`` whatever was
skipped. `WarmupEmaAdam` warms the EMA decay up, so the averaged weights of
a short run are not dominated by the initialisation.
"""

import math

import tensorflow as tf
import tf_keras

__all__ = [
    'WarmupDecaySchedule', 'WarmupEmaAdam', 'from_config', 'make_optimizer'
]


class WarmupDecaySchedule(tf_keras.optimizers.schedules.LearningRateSchedule):
  """``lr(t)``: ``peak·(t+1)/warmup`` for t < warmup, then the chosen decay.

  (t counts completed steps, so the first update already moves.)

  * ``'none'``: constant ``peak``;
  * ``'exponential'``: ``max(min_lr, peak · rate^(t − start))`` for t ≥ start;
  * ``'cosine'``: from ``peak`` at ``start`` to ``min_lr`` at ``total``.
  """

  def __init__(self,
               peak,
               warmup_steps,
               decay='none',
               decay_rate=1.,
               decay_start=0,
               total_steps=1,
               min_learning_rate=0.,
               step=None):
    super().__init__()
    self.step = step
    self.peak = float(peak)
    self.warmup_steps = int(warmup_steps)
    self.decay = decay
    self.decay_rate = float(decay_rate)
    self.decay_start = int(max(decay_start, warmup_steps))
    self.total_steps = int(total_steps)
    self.min_learning_rate = float(min_learning_rate)

  def __call__(self, step):
    if self.step is not None:
      step = self.step
    step = tf.cast(step, tf.float32)
    peak = tf.constant(self.peak, tf.float32)
    warm = peak * (step + 1.) / max(self.warmup_steps, 1)
    since = tf.maximum(step - self.decay_start, 0.)
    if self.decay == 'exponential':
      after = tf.maximum(self.min_learning_rate,
                         peak * tf.pow(self.decay_rate, since))
    elif self.decay == 'cosine':
      span = max(self.total_steps - self.decay_start, 1)
      progress = tf.minimum(since / span, 1.)
      after = self.min_learning_rate + 0.5 * (
          self.peak - self.min_learning_rate) * (1. +
                                                 tf.cos(math.pi * progress))
    else:
      after = peak
    return tf.where(step < self.warmup_steps, warm, after)

  def get_config(self):
    return dict(
        peak=self.peak,
        warmup_steps=self.warmup_steps,
        decay=self.decay,
        decay_rate=self.decay_rate,
        decay_start=self.decay_start,
        total_steps=self.total_steps,
        min_learning_rate=self.min_learning_rate)


def from_config(train_config, step=None):
  """The schedule a `TrainConfig` describes (following ``step`` if given)."""
  return WarmupDecaySchedule(
      train_config.learning_rate,
      train_config.warmup_steps,
      decay=train_config.lr_decay,
      decay_rate=train_config.lr_decay_rate,
      decay_start=train_config.lr_decay_start,
      total_steps=train_config.train_steps,
      min_learning_rate=train_config.min_learning_rate,
      step=step)


class WarmupEmaAdam(tf_keras.optimizers.Adam):
  """Adam whose EMA decay warms up: ``min(decay, (1 + t) / (10 + t))``.

  ``tf_keras`` keeps the Polyak average with a constant momentum, so after t
  updates a fraction ``decay^t`` of it is still the initial weights: 37% at
  t = 1,000 and 5% at t = 3,000 for the configs' 0.999. Evaluating that
  average in a short run measures the initialisation, not the model (our
  Fashion-MNIST reference run: validation 5.26 bits/dim with the EMA
  against 3.46 with the raw weights at step 1,000). With the warm-up of
  `tf.train.ExponentialMovingAverage`'s ``num_updates`` (t = updates so
  far), the averaging window grows with the run and reaches
  ``1 / (1 - decay)`` steps after ``(10 decay - 1) / (1 - decay)`` updates
  (8,990 for 0.999); from there on it is the plain EMA.
  """

  def __init__(self, *args, ema_warmup=True, **kwargs):
    super().__init__(*args, **kwargs)
    self.ema_warmup = bool(ema_warmup)

  def _update_model_variables_moving_average(self, var_list):
    # tf_keras calls this hook after the variables are updated and before
    # `iterations` is incremented; its update reads `self.ema_momentum` when
    # it is traced, so a tensor here makes the decay step-dependent.
    if not (self.use_ema and self.ema_warmup):
      return super()._update_model_variables_moving_average(var_list)
    decay = self.ema_momentum
    t = tf.cast(self.iterations, tf.float32)
    self.ema_momentum = tf.minimum(tf.constant(decay, tf.float32),
                                   (1. + t) / (10. + t))
    try:
      return super()._update_model_variables_moving_average(var_list)
    finally:
      self.ema_momentum = decay


def make_optimizer(train_config, step=None):
  """Adam with warmup schedule, global-norm clipping and EMA weights.

  Args:
    train_config: `TrainConfig`.
    step: the trainer's step variable (counting skipped steps too) for the
      schedule to follow; default the optimizer's own iteration count.

  Returns:
    A `WarmupEmaAdam` (a `tf_keras.optimizers.Adam`).
  """
  return WarmupEmaAdam(
      learning_rate=from_config(train_config, step),
      beta_1=train_config.adam_beta1,
      beta_2=train_config.adam_beta2,
      epsilon=train_config.adam_epsilon,
      global_clipnorm=train_config.grad_clip_norm or None,
      use_ema=train_config.ema_decay > 0,
      ema_momentum=train_config.ema_decay or 0.99,
      ema_warmup=train_config.ema_warmup)
