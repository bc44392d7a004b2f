"""The training loop: distributed, resumable, NaN-safe, with EMA evaluation.

`train(model_config, data_config, train_config, workdir)` is what
``bin/train`` runs. Constructing a `Trainer` does steps 1–3 (the data and the
model can be handed in instead: ``dataset=``, ``model_fn=``); `Trainer.run`
does the rest:

1. loads the data and fits the model config to its image shape and levels;
2. refuses a workdir holding a different architecture (before writing);
3. builds model and optimizer under the `tf.distribute` strategy's scope;
4. restores the latest checkpoint — or runs the data-dependent ActNorm
   initialisation on one ``init_batch_size`` batch and saves step 0;
5. trains: each step all-reduces the gradients, and applies them only if
   the loss and every gradient are finite on every replica (otherwise the
   step is skipped with parameters and optimizer state untouched, counted
   and logged); Adam, warmup, global-norm clipping and EMA come from the
   `tf_keras` optimizer;
6. every ``eval_every`` steps evaluates validation bits/dim with the EMA
   weights, writes a sample grid and a bpd curve, TensorBoard summaries and
   one line of ``metrics.jsonl``; checkpoints every ``checkpoint_every``
   steps and on exit (also on Ctrl-C / SIGTERM, at the end of the step in
   flight; a second signal stops at once);
7. at the end evaluates the test split with the importance-weighted bound.

Killing the process at any point and re-running the same command resumes
from the last checkpoint: the data position is a function of the step.
"""

import math
import os
import signal
import threading
import time

import numpy as np
import tensorflow as tf

from tfp_flowpp import data as data_lib
from tfp_flowpp import model_builder
from tfp_flowpp import precision
from tfp_flowpp.networks import fused_attention
from tfp_flowpp.networks import fused_elementwise
from tfp_flowpp.training import atomic_files
from tfp_flowpp.training import checkpoints
from tfp_flowpp.training import determinism
from tfp_flowpp.training import evaluation
from tfp_flowpp.training import figures
from tfp_flowpp.training import loss_scale as loss_scale_lib
from tfp_flowpp.training import optimization
from tfp_flowpp.training import progress
from tfp_flowpp.training import strategy as strategy_lib
from tfp_flowpp.training import workdir as workdir_lib

__all__ = ['Trainer', 'train', 'TrainingError']


class TrainingError(RuntimeError):
  """Training cannot continue (one-line message)."""


class _Interrupted(KeyboardInterrupt):
  """Ctrl-C / SIGTERM during training: checkpoint, then stop (exit 130)."""


class Trainer:
  """One training run in one workdir (see module docstring).

  Construction builds everything the run uses — data, strategy, model,
  optimizer, counters, checkpoint manager, evaluator, TensorBoard writer,
  progress bar, train step — and checks the workdir, but trains nothing and
  writes neither config.json nor a checkpoint (only the TensorBoard event
  file is opened); `run` restores or initialises and trains.

  Args:
    model_config: `ModelConfig`; its ``image_shape`` and ``num_levels`` are
      replaced by the dataset's and an ``auto`` precision by the policy it
      resolves to. It is what the workdir records.
    data_config: `DataConfig` of the data (recorded in the workdir; loaded
      with `data.load_dataset` unless ``dataset`` is given).
    train_config: `TrainConfig`.
    workdir: Run directory (see `Workdir`).
    dataset: An `ImageDataset` to train on instead of loading
      ``data_config``, e.g. from `data.from_arrays`.
    strategy: A `tf.distribute.Strategy`; default from ``train_config``.
    stream: Where progress goes (default stdout).
    model_fn: ``model_fn(model_config) -> DiscreteImageFlow``, called once
      inside the strategy's scope; default `model_builder.build_model`.
      Any `DiscreteImageFlow` trains (e.g. one whose flow is TFP's
      `tfb.Glow`); `restore_for_inference` rebuilds it from the config with
      the same ``model_fn``.

  Attributes:
    model, optimizer, strategy, dataset, evaluator: What the run uses.
    train_step: The `tf.function` ``train_step(batch, step) -> (loss,
      grad_norm, applied)``: one optimizer step on a global batch of images
      (``(images, labels)`` for a class-conditional model; a distributed
      value under a multi-replica strategy), skipped when the loss or any
      gradient is non-finite.
    conditional: Whether the model is class-conditional (``conditioning=
      'class'``): then the model config records the data's ``num_classes``,
      ``class_labels`` and ``class_names``, batches carry labels, the
      class frequencies p(y) are set at initialisation, bits/dim are
      class-conditional and sample grids have one row per class.
    step, skipped: Checkpointed int64 counters (optimizer steps taken,
      steps skipped for a non-finite loss or gradient; a float16 loss-scale
      overflow is not counted).
    loss_scale: The checkpointed `DynamicLossScale` (enabled only for
      ``mixed_float16``).
  """

  def __init__(self,
               model_config,
               data_config,
               train_config,
               workdir,
               dataset=None,
               strategy=None,
               stream=None,
               model_fn=None):
    if train_config.deterministic:  # Before this run creates any op.
      determinism.enable(train_config.seed)
    self.train_config = train_config
    self.data_config = data_config
    self.workdir = workdir_lib.Workdir(workdir)
    self.stream = stream
    self.strategy = strategy or strategy_lib.make_strategy(
        train_config.distribution, train_config.num_cpu_replicas)
    self.chief = strategy_lib.is_chief()
    self.dataset = dataset or data_lib.load_dataset(data_config)
    policy, reason = precision.resolve(model_config.precision)
    self.precision_message = f'Precision: {policy} ({reason}).'
    network_dtype = precision.network_dtype(policy) or model_config.dtype
    self.attention_message = None
    if 'attention' in (model_config.mixer, model_config.dequantizer_mixer,
                       model_config.context_mixer):
      self.attention_message = 'Attention: ' + fused_attention.describe(
          model_config.attention_kernel, network_dtype) + '.'
    self.elementwise_message = None
    if (model_config.network == 'gated_resnet' or
        model_config.dequantizer == 'variational'):
      self.elementwise_message = (
          'Gated blocks: ' + fused_elementwise.describe(network_dtype) + '.')
    self.model_config = model_config.replace(
        image_shape=tuple(self.dataset.image_shape),
        num_levels=int(self.dataset.num_levels),
        precision=policy)
    self.conditional = model_config.conditioning == 'class'
    if self.conditional:
      self.dataset.class_counts()  # DataError (one line) without labels.
      self.model_config = self.model_config.replace(
          num_classes=self.dataset.num_classes,
          class_labels=self.dataset.class_labels,
          class_names=self.dataset.model_class_names)
    replicas = self.strategy.num_replicas_in_sync
    if train_config.batch_size % replicas:
      raise ValueError(f'batch_size {train_config.batch_size} is not '
                       f'divisible by the {replicas} replicas.')
    # Batch sizes the data cannot fill fail here, before anything is written.
    self.dataset.steps_per_epoch(train_config.batch_size)
    self.dataset.steps_per_epoch(train_config.init_batch_size)
    # Fail before writing anything if the workdir holds another model.
    self.workdir.check_compatible(self.model_config)
    self._build(model_fn or model_builder.build_model)
    self.evaluator = evaluation.BpdEvaluator(
        self.model, self.strategy, seed=train_config.seed + 1)
    self.train_step = self._make_train_step()
    self._sample_fn = tf.function(lambda n, seed, labels=None: self.model.sample(
        n, seed=seed, temperature=train_config.sample_temperature,
        labels=labels))
    self.baseline_bpd = self._histogram_baseline()
    self.bar = progress.ProgressBar(
        train_config.train_steps, stream=stream) if self.chief else None
    self.writer = (
        tf.summary.create_file_writer(self.workdir.tensorboard_dir)
        if self.chief else tf.summary.create_noop_writer())
    self.elapsed = 0.  # Training wall seconds (evaluations excluded).
    self.cpu_seconds = 0.  # Training process CPU seconds (ditto).
    self.images_per_sec = None  # Of the last log window.
    self._ready = False  # Restored or initialised.

  # Construction --------------------------------------------------------------

  def _build(self, model_fn):
    with self.strategy.scope():
      self.model = model_fn(self.model_config)
      self.step = tf.Variable(
          0,
          dtype=tf.int64,
          trainable=False,
          name='step',
          aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
      # The schedule follows `step`, which counts skipped steps too.
      self.optimizer = optimization.make_optimizer(self.train_config,
                                                   step=self.step)
      self.skipped = tf.Variable(
          0,
          dtype=tf.int64,
          trainable=False,
          name='skipped_steps',
          aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
      self.consecutive_skips = tf.Variable(
          0,
          dtype=tf.int64,
          trainable=False,
          name='consecutive_skips',
          aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
      # [training wall seconds, training CPU seconds] at the last save, so
      # both (and the --max_cpu_seconds budget) add up across resumes.
      self.clock = tf.Variable(
          [0., 0.],
          dtype=tf.float64,
          trainable=False,
          name='clock',
          aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
      # [sum, count] of the training bpd of applied steps, per log window
      # and per evaluation window; read and reset from Python.
      self.window_bpd = tf.Variable(
          [0., 0.],
          trainable=False,
          name='window_bpd',
          aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
      self.eval_window_bpd = tf.Variable(
          [0., 0.],
          trainable=False,
          name='eval_window_bpd',
          aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
      self.loss_scale = loss_scale_lib.DynamicLossScale(
          enabled=precision.uses_loss_scaling(self.model_config.precision))
    self.variables = self.model.trainable_variables
    self.checkpoint = checkpoints.make_checkpoint(
        self.model,
        self.optimizer,
        self.step,
        self.skipped,
        consecutive_skips=self.consecutive_skips,
        loss_scale=self.loss_scale,
        clock=self.clock)
    directory = self.workdir.checkpoint_dir
    if not self.chief:
      # Multi-worker saving is collective: every worker saves, non-chief
      # workers into throw-away folders; all restore from the chief's.
      directory = os.path.join(self.workdir.path, 'worker_tmp',
                               strategy_lib.task_name())
    self.manager = tf.train.CheckpointManager(
        self.checkpoint,
        directory,
        max_to_keep=self.train_config.keep_checkpoints)

  def _print(self, text):
    if self.bar is not None:  # The chief's.
      self.bar.message(text)

  # Initialisation / restore ----------------------------------------------------

  def restore_or_initialize(self):
    """Restores the workdir's latest checkpoint, or initialises the model.

    Without a checkpoint, writes config.json, runs the data-dependent
    initialisation on one ``init_batch_size`` batch and saves step 0. Only
    the first call does anything (`run` calls it).

    Returns:
      The step training continues from.

    Raises:
      CheckpointError: the checkpoint does not fit or is unreadable.
      TrainingError: the initialisation gave a non-finite bound.
    """
    if not self._ready:
      self._restore_or_initialize()
      self._ready = True
    return int(self.step.numpy())

  def _describe_data(self):
    """``Data: digits (source digits; all 10 classes), 17 levels, ...``."""
    dataset = self.dataset
    config = dataset.config or self.data_config
    total = len(dataset.class_names) if dataset.class_names else None
    of = f' of {total}' if total else ''
    if config.classes:
      kept = f'classes {",".join(map(str, config.classes))}{of}'
    else:
      kept = f'all{" " + str(total) if total else ""} classes'
    sizes = ', '.join(
        f'{split} {dataset.num_examples[split]:,}'
        for split in ('train', 'validation', 'test'))
    return (f'Data: {dataset.name} (source {config.dataset}; {kept}), '
            f'{dataset.num_levels} levels, images '
            f'{"x".join(map(str, dataset.image_shape))}; {sizes} images.')

  def _restore_or_initialize(self):
    self._print(self._describe_data())
    self._print(self.precision_message)
    if self.attention_message:
      self._print(self.attention_message)
    if self.elementwise_message:
      self._print(self.elementwise_message)
    latest = tf.train.latest_checkpoint(self.workdir.checkpoint_dir)
    if latest:
      with self.strategy.scope():
        self.optimizer.build(self.variables)
      try:
        names = checkpoints.restore_training_state(self.checkpoint, latest)
      except checkpoints.RESTORE_ERRORS as e:
        raise checkpoints.restore_error(latest, e) from e
      step = int(self.step.numpy())
      if self.chief:
        self.workdir.truncate_metrics(step)
      self._restore_clock(names, step)
      self._print(f'Resumed from {latest} at step {step} '
                  f'({int(self.skipped.numpy())} skipped so far).')
      return
    if self.chief:
      os.makedirs(self.workdir.path, exist_ok=True)
      self.workdir.write_configs(self.model_config, self.data_config,
                                 self.train_config)
    batch = next(
        iter(
            self.dataset.train_batches(
                self.train_config.init_batch_size, start_step=0,
                with_labels=self.conditional)))
    labels = class_counts = None
    if self.conditional:
      batch, labels = batch
      class_counts = self.dataset.class_counts()
    started = time.time()
    # Cross-replica context: every replica gets the same initial values.
    kwargs = ({} if labels is None else
              {'labels': labels, 'class_counts': class_counts})
    bound = self.model.initialize(
        batch, seed=tf.constant([self.train_config.seed, -1], tf.int32),
        **kwargs)
    init_bpd = float(tf.reduce_mean(self.model.nats_to_bits_per_dim(bound)))
    if not math.isfinite(init_bpd):
      raise TrainingError('Data-dependent initialisation produced a non-finite '
                          'bound; check the data range and num_levels.')
    # Build the optimizer only now, so the EMA starts at initialised values.
    with self.strategy.scope():
      self.optimizer.build(self.variables)
    self._print(
        f'Initialised {model_builder.count_parameters(self.model):,} '
        f'parameters on {int(batch.shape[0])} images '
        f'({time.time() - started:.1f}s): {init_bpd:.4f} bits/dim. Training '
        f'with {strategy_lib.describe(self.strategy)}.')
    self._save(0, 0., 0.)

  def _restore_clock(self, names, step):
    """Training wall/CPU seconds so far: the checkpoint's, else the log's.

    ``names``: the restored checkpoint's variables. Checkpoints written
    before the clock was saved resume from the last metrics record at or
    before ``step`` (what was logged by then).
    """
    if 'clock/.ATTRIBUTES/VARIABLE_VALUE' in names:
      self.elapsed, self.cpu_seconds = (float(v) for v in self.clock.numpy())
      return
    for record in reversed(self.workdir.read_metrics()):
      if record.get('step', math.inf) <= step and 'cpu_seconds' in record:
        self.elapsed = float(record.get('elapsed_sec', 0.))
        self.cpu_seconds = float(record['cpu_seconds'])
        return

  def _save(self, step, elapsed, cpu_seconds):
    self.clock.assign([elapsed, cpu_seconds])
    self.manager.save(checkpoint_number=step)

  # Train step ----------------------------------------------------------------

  def _apply_if_finite(self, strategy, grads, loss_finite, grads_finite):
    """Cross-replica: apply the (already reduced) gradients, or skip.

    A skip for a float16 loss-scale overflow (`DynamicLossScale`) is not
    counted as a non-finite step.
    """
    first = lambda t: strategy.experimental_local_results(t)[0]
    finite, count = self.loss_scale.update(
        first(loss_finite), first(grads_finite))

    def apply():
      strategy.extended.call_for_each_replica(
          lambda g: self.optimizer.apply_gradients(
              zip(g, self.variables), skip_gradients_aggregation=True),
          args=(grads,))
      self.consecutive_skips.assign(0)
      return tf.constant(True)

    def skip():
      increment = tf.cast(count, tf.int64)
      self.skipped.assign_add(increment)
      self.consecutive_skips.assign_add(increment)
      return tf.constant(False)

    return tf.cond(finite, apply, skip)

  def _make_train_step(self):
    model, strategy = self.model, self.strategy
    global_batch = float(self.train_config.batch_size)
    seed0 = self.train_config.seed

    conditional = self.conditional

    def replica_fn(batch, step):
      images, labels = batch if conditional else (batch, None)
      ctx = tf.distribute.get_replica_context()
      seed = tf.random.experimental.stateless_fold_in(
          tf.stack([tf.constant(seed0, tf.int64), step]),
          ctx.replica_id_in_sync_group)
      with tf.GradientTape() as tape:
        bound = model.log_prob(
            images, seed=seed, training=True,
            **({} if labels is None else {'labels': labels}))
        bpd = model.nats_to_bits_per_dim(bound)
        loss = tf.reduce_sum(bpd) / global_batch
        scaled_loss = self.loss_scale.scale_loss(loss)
      grads = self.loss_scale.unscale(
          tape.gradient(scaled_loss, self.variables))
      grads = ctx.all_reduce(tf.distribute.ReduceOp.SUM, grads)
      loss = ctx.all_reduce(tf.distribute.ReduceOp.SUM, loss)
      grad_norm = tf.linalg.global_norm(grads)
      applied = ctx.merge_call(
          self._apply_if_finite,
          args=(grads, tf.math.is_finite(loss), tf.math.is_finite(grad_norm)))
      return loss, grad_norm, applied

    @tf.function
    def train_step(batch, step):
      loss, grad_norm, applied = strategy.run(replica_fn, args=(batch, step))
      first = lambda t: strategy.experimental_local_results(t)[0]
      loss, grad_norm, applied = first(loss), first(grad_norm), first(applied)
      self.step.assign_add(1)
      update = tf.where(applied, tf.stack([tf.cast(loss, tf.float32), 1.]),
                        tf.zeros([2]))
      self.window_bpd.assign_add(update)
      self.eval_window_bpd.assign_add(update)
      return loss, grad_norm, applied

    return train_step

  # Evaluation ----------------------------------------------------------------

  def _sample_grid(self, step):
    n = self.train_config.num_sample_images
    if not n:
      return None
    seed = tf.constant([self.train_config.seed, 12345], tf.int32)
    columns = None
    try:
      if self.conditional:  # One row per class.
        columns = max(1, n // self.model.num_classes)
        labels = np.repeat(np.arange(self.model.num_classes), columns)
        images = self._sample_fn(len(labels), seed,
                                 tf.constant(labels, tf.int32))
      else:
        images = self._sample_fn(n, seed)
    except tf.errors.InvalidArgumentError as e:  # Non-finite: no pixels.
      first = (e.message.strip().splitlines() or [''])[0]
      self._print(f'No sample grid at step {step}: {first[:300]}')
      return None
    path = os.path.join(self.workdir.figures_dir, f'samples_{step:08d}.png')
    grid = figures.save_image_grid(images.numpy(), path, self.model.num_levels,
                                   columns=columns)
    with open(path, 'rb') as f:
      atomic_files.atomic_write_bytes(
          os.path.join(self.workdir.figures_dir, 'samples_latest.png'),
          f.read())
    return grid

  def _evaluate(self, step, train_stats, final=False):
    cfg = self.train_config
    steps_per_epoch = max(self.dataset.steps_per_epoch(cfg.batch_size), 1)
    record = dict(
        step=step, epoch=step / steps_per_epoch, wall_time=time.time(),
        elapsed_sec=self.elapsed, cpu_seconds=self.cpu_seconds,
        skipped_steps=int(self.skipped.numpy()),
        learning_rate=self._learning_rate())
    record.update(train_stats)
    with checkpoints.ema_weights(self.model, self.optimizer):
      val = self.evaluator.evaluate(
          self.dataset.eval_batches('validation', cfg.eval_batch_size,
                                    with_labels=self.conditional),
          num_samples=cfg.eval_num_samples,
          max_images=cfg.max_eval_images)
      record['val_bpd'] = val['bpd']
      record['val_num_samples'] = cfg.eval_num_samples
      if final:
        test = self.evaluator.evaluate(
            self.dataset.eval_batches('test', cfg.eval_batch_size,
                                      with_labels=self.conditional),
            num_samples=cfg.test_num_samples)
        record['test_bpd'] = test['bpd']
        record['test_num_samples'] = cfg.test_num_samples
        record['test_seconds'] = test['seconds']
      grid = self._sample_grid(step) if self.chief else None
    if not self.chief:
      return record
    self.workdir.append_metrics(record)
    with self.writer.as_default(step=step):
      tf.summary.scalar('val/bpd', record['val_bpd'])
      if 'test_bpd' in record:
        tf.summary.scalar('test/bpd', record['test_bpd'])
      if grid is not None:
        tf.summary.image('samples', grid[np.newaxis], max_outputs=1)
    self.writer.flush()
    self._plot_curves()
    message = (f'eval @ step {step}: val {record["val_bpd"]:.4f} bits/dim '
               f'(k={cfg.eval_num_samples})')
    if 'train_bpd' in record:
      message += f', train {record["train_bpd"]:.4f}'
    if final:
      message += (f', TEST {record["test_bpd"]:.4f} bits/dim '
                  f'(importance-weighted, k={cfg.test_num_samples})')
    self._print(message)
    return record

  def _plot_curves(self):
    records = self.workdir.read_metrics()
    curves = {}
    for key, name in (('train_bpd', 'train'), ('val_bpd', 'validation'),
                      ('test_bpd', 'test')):
      points = [(r['step'], r[key]) for r in records if key in r]
      curves[name] = ([p[0] for p in points], [p[1] for p in points])
    baselines = {}
    if self.baseline_bpd is not None:
      baselines['per-pixel histogram'] = self.baseline_bpd
    figures.plot_bpd_curves(
        curves,
        os.path.join(self.workdir.figures_dir, 'bpd_curve.png'),
        title=f'{self.dataset.name}: bits/dim',
        baselines=baselines)

  # Main loop -------------------------------------------------------------------

  def run(self):
    """Trains to ``train_steps``; returns the last metrics record."""
    cfg = self.train_config
    start = self.restore_or_initialize()
    if start >= cfg.train_steps:
      finished = [
          r for r in self.workdir.read_metrics()
          if r.get('step') == start and 'test_bpd' in r
      ]
      if finished:  # Nothing to do: report the stored result.
        record = finished[-1]
        self._print(
            f'Already trained to step {start} (train_steps={cfg.train_steps}'
            f'): val {record["val_bpd"]:.4f}, TEST {record["test_bpd"]:.4f} '
            f'bits/dim (importance-weighted, k={record.get("test_num_samples")}'
            f'), from {self.workdir.metrics_path}.')
        return record
      # Stopped after the last checkpoint but before the final evaluation.
      self._print(f'Trained to step {start}; running the final evaluation.')
      return self._final(start, {})
    batches = self.dataset.train_batches(
        cfg.batch_size, start_step=start, with_labels=self.conditional)
    iterator = iter(self.strategy.experimental_distribute_dataset(batches))
    if self.bar is not None:
      self.bar.restart(start)
    # SIGINT/SIGTERM only set a flag, checked before every step: a handler
    # that raises can be lost (Python drops exceptions raised while it runs
    # a finalizer), a flag cannot. A second signal stops at once (e.g. in a
    # long evaluation).
    requested = []

    def on_signal(signum, frame):
      del frame
      if requested:
        raise _Interrupted()
      requested.append(signum)

    previous_handlers = {}
    if threading.current_thread() is threading.main_thread():
      for s in (signal.SIGINT, signal.SIGTERM):
        previous_handlers[s] = signal.getsignal(s)
        signal.signal(s, on_signal)
    window_images = 0
    window_start = time.time()
    step = start
    cpu_start = time.process_time()
    try:
      while step < cfg.train_steps:
        if requested:
          raise _Interrupted()
        if cfg.max_cpu_seconds and (
            self.cpu_seconds + time.process_time() - cpu_start >=
            cfg.max_cpu_seconds):
          self._print(f'CPU budget of {cfg.max_cpu_seconds:.0f}s reached at '
                      f'step {step}.')
          break
        batch = next(iterator)
        _, grad_norm, _ = self.train_step(batch, tf.constant(step, tf.int64))
        step += 1
        window_images += cfg.batch_size
        last = step == cfg.train_steps
        if step % cfg.log_every == 0 or last or step % cfg.eval_every == 0:
          elapsed = time.time() - window_start
          self.elapsed += elapsed
          self.images_per_sec = window_images / max(elapsed, 1e-9)
          self._log(step, float(grad_norm))
          window_images = 0
          window_start = time.time()
        if step % cfg.checkpoint_every == 0 and not last:
          self._save(step, self.elapsed + time.time() - window_start,
                     self.cpu_seconds + time.process_time() - cpu_start)
        if step % cfg.eval_every == 0 and not last:
          eval_start = time.time()
          self.cpu_seconds += time.process_time() - cpu_start
          self._evaluate(step, self._train_stats())
          cpu_start = time.process_time()
          window_start += time.time() - eval_start
    except KeyboardInterrupt:  # _Interrupted included.
      self._save(int(self.step.numpy()),
                 self.elapsed + time.time() - window_start,
                 self.cpu_seconds + time.process_time() - cpu_start)
      if self.bar is not None:
        self.bar.close()
      self._print(f'Interrupted at step {int(self.step.numpy())}; checkpoint '
                  'saved. Re-run the same command to resume.')
      raise
    finally:
      for s, handler in previous_handlers.items():
        signal.signal(s, handler)
    self.cpu_seconds += time.process_time() - cpu_start
    if self.bar is not None:
      self.bar.close()
    self._save(step, self.elapsed, self.cpu_seconds)
    return self._final(step, self._train_stats())

  def _log(self, step, grad_norm):
    """Progress bar + TensorBoard scalars for the window since last log."""
    cfg = self.train_config
    total, count = (float(v) for v in self.window_bpd.numpy())
    self.window_bpd.assign([0., 0.])
    bpd = total / count if count else float('nan')
    consecutive = int(self.consecutive_skips.numpy())
    skipped = int(self.skipped.numpy())
    if consecutive >= cfg.max_consecutive_skips:
      raise TrainingError(
          f'{consecutive} consecutive steps had a non-finite loss or gradient; '
          'stopping (parameters are from the last good step). Lower '
          '--learning_rate or check the data.')
    lr = self._learning_rate()
    if self.bar is not None:
      self.bar.update(
          step,
          bpd=bpd,
          **{'img/s': self.images_per_sec},
          skipped=skipped or None)
    with self.writer.as_default(step=step):
      if count:
        tf.summary.scalar('train/bpd', bpd)
      tf.summary.scalar('train/grad_norm', grad_norm)
      tf.summary.scalar('train/learning_rate', lr)
      tf.summary.scalar('train/skipped_steps', skipped)
      tf.summary.scalar('train/images_per_sec', self.images_per_sec)

  def _learning_rate(self):
    """The rate of the next step, schedule(step)."""
    return float(optimization.from_config(self.train_config)(self.step))

  def _train_stats(self):
    """Mean train bpd since the last evaluation (applied steps only)."""
    total, count = (float(v) for v in self.eval_window_bpd.numpy())
    self.eval_window_bpd.assign([0., 0.])
    stats = {'images_per_sec': self.images_per_sec}
    if count:
      stats['train_bpd'] = total / count
    return stats

  def _final(self, step, stats):
    record = self._evaluate(step, stats, final=True)
    if self.baseline_bpd is not None and 'test_bpd' in record:
      verdict = ('beats'
                 if record['test_bpd'] < self.baseline_bpd else 'does NOT beat')
      self._print(
          f'Test bits/dim {record["test_bpd"]:.4f} {verdict} the per-pixel '
          f'histogram baseline {self.baseline_bpd:.4f} on the same split.')
    return record

  def _histogram_baseline(self):
    try:
      train = self.dataset.arrays('train')
      test = self.dataset.arrays('test')
    except data_lib.DataError:  # Streaming data, or an empty split.
      return None
    return float(
        data_lib.per_pixel_histogram_bpd(train, test, self.dataset.num_levels))


def train(model_config, data_config, train_config, workdir, stream=None):
  """Builds a `Trainer` and runs it; returns the final metrics record."""
  return Trainer(
      model_config, data_config, train_config, workdir, stream=stream).run()
