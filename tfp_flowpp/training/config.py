"""Training configuration: a plain, frozen dataclass (no flags here).

Defaults follow the official Flow++ CIFAR-10 run (Adam 3e-4, linear warmup
2000 steps, global-norm clipping 1.0, Polyak/EMA 0.999, data-dependent init
on a 128-image batch); ``configs/*.flags`` override them per experiment.
"""

import dataclasses

__all__ = ['TrainConfig', 'LR_DECAYS', 'DISTRIBUTIONS']

LR_DECAYS = ('none', 'exponential', 'cosine')
DISTRIBUTIONS = ('auto', 'default', 'mirrored', 'multi_worker')


def _field(default, help_text):
  return dataclasses.field(default=default, metadata={'help': help_text})


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Optimisation, cadence and output settings of a training run."""

  train_steps: int = _field(
      100000, 'Total optimizer steps (the run stops there; re-running '
      'resumes).')
  batch_size: int = _field(64, 'Global batch size (split across replicas).')
  init_batch_size: int = _field(
      128, 'Images for the data-dependent initialisation before step 1.')
  eval_batch_size: int = _field(256, 'Batch size for evaluation passes.')
  learning_rate: float = _field(3e-4, 'Peak Adam learning rate.')
  warmup_steps: int = _field(2000, 'Linear learning-rate warmup steps.')
  lr_decay: str = _field(
      'none', 'After warmup: none (constant), exponential (x lr_decay_rate '
      'per step, floored at min_learning_rate) or cosine (to '
      'min_learning_rate at train_steps).')
  lr_decay_rate: float = _field(0.99995,
                                'Per-step factor for exponential decay.')
  lr_decay_start: int = _field(
      0, 'Step at which decay starts (defaults to the end of warmup).')
  min_learning_rate: float = _field(0., 'Floor of the decayed rate.')
  adam_beta1: float = _field(0.9, 'Adam beta1.')
  adam_beta2: float = _field(0.999, 'Adam beta2.')
  adam_epsilon: float = _field(1e-8, 'Adam epsilon.')
  grad_clip_norm: float = _field(1.0,
                                 'Global-norm gradient clipping (0 disables).')
  ema_decay: float = _field(
      0.999, 'Polyak/EMA decay of the weights used for evaluation, sampling '
      'and export (0 disables).')
  ema_warmup: bool = _field(
      True, 'Warm the EMA decay up as min(ema_decay, (1 + t) / (10 + t)) '
      'after t updates (tf.train.ExponentialMovingAverage num_updates), so '
      'the averaged weights of a short run are not mostly the '
      'initialisation; --noema_warmup keeps the constant decay of the '
      'official code.')
  eval_every: int = _field(
      1000, 'Evaluate (validation bpd, samples, curves) every N steps and at '
      'the end.')
  eval_num_samples: int = _field(
      1, 'Importance samples k for periodic validation bpd (1 = '
      'single-sample bound).')
  test_num_samples: int = _field(
      64, 'Importance samples k for the final test-set evaluation (official '
      'paper numbers use 4096).')
  max_eval_images: int = _field(
      0, 'Cap on images per periodic validation pass (0 = whole split).')
  checkpoint_every: int = _field(
      1000, 'Write a checkpoint every N steps (and always at exit).')
  keep_checkpoints: int = _field(3, 'Checkpoints kept in the workdir.')
  log_every: int = _field(50, 'Progress/TensorBoard scalar cadence in steps.')
  num_sample_images: int = _field(
      64, 'Images in each sample grid written at evaluation.')
  sample_temperature: float = _field(
      0.7, 'Prior temperature for the sample grids (1.0 = the model).')
  distribution: str = _field(
      'auto', 'auto (MultiWorkerMirrored if TF_CONFIG is set, Mirrored over '
      'all GPUs if any, else default), default, mirrored, multi_worker.')
  num_cpu_replicas: int = _field(
      0, 'With distribution=mirrored and no GPU: split the CPU into this many '
      'logical devices (testing data parallelism without GPUs).')
  max_cpu_seconds: float = _field(
      0., 'Stop training once this much process CPU time (user + system, '
      'all threads; evaluation excluded) was spent in this run, then evaluate '
      'as at train_steps (0 = no budget). For equal-compute comparisons.')
  seed: int = _field(0, 'Seed for init, data order and dequantization noise.')
  deterministic: bool = _field(
      False, 'Bit-reproducible training: deterministic TF kernels '
      '(tf.config.experimental.enable_op_determinism) and a global TF seed, '
      'so a resumed run equals an uninterrupted one bit for bit (slower; see '
      'docs/reproducibility.md).')
  max_consecutive_skips: int = _field(
      100, 'Abort if this many consecutive steps have non-finite '
      'loss/gradients (each such step is skipped, parameters untouched).')

  def __post_init__(self):
    positive = ('train_steps', 'batch_size', 'init_batch_size',
                'eval_batch_size', 'eval_every', 'checkpoint_every',
                'keep_checkpoints', 'log_every', 'eval_num_samples',
                'test_num_samples', 'max_consecutive_skips')
    for name in positive:
      if getattr(self, name) < 1:
        raise ValueError(f'{name} must be >= 1, got {getattr(self, name)}.')
    if self.num_sample_images < 0 or self.max_eval_images < 0:
      raise ValueError('num_sample_images and max_eval_images must be >= 0.')
    if self.learning_rate <= 0:
      raise ValueError(f'learning_rate must be > 0, got {self.learning_rate}.')
    if self.warmup_steps < 0 or self.lr_decay_start < 0:
      raise ValueError('warmup_steps and lr_decay_start must be >= 0.')
    if self.lr_decay not in LR_DECAYS:
      raise ValueError(f'lr_decay must be one of {LR_DECAYS}, got '
                       f'{self.lr_decay!r}.')
    if self.distribution not in DISTRIBUTIONS:
      raise ValueError(f'distribution must be one of {DISTRIBUTIONS}, got '
                       f'{self.distribution!r}.')
    if not 0. <= self.ema_decay < 1.:
      raise ValueError(f'ema_decay must be in [0, 1), got {self.ema_decay}.')
    if self.grad_clip_norm < 0:
      raise ValueError('grad_clip_norm must be >= 0.')
    if self.max_cpu_seconds < 0:
      raise ValueError('max_cpu_seconds must be >= 0.')
    if self.sample_temperature <= 0:
      raise ValueError('sample_temperature must be > 0.')
