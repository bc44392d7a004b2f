"""Checkpoint layout and restoring a trained model for inference.

A checkpoint holds the model, the optimizer (Adam moments, iteration count
and the EMA/Polyak copies of the weights that `tf_keras` optimizers keep with
``use_ema=True``), the step (which also fixes the data position: batch k of
a run is always the same images), the skipped-step counters (total and
consecutive, so the abort after ``max_consecutive_skips`` counts across a
resume) and the dynamic loss scale (`DynamicLossScale`). Checkpoints
written before a counter or the loss scale existed restore without it.
"""

import contextlib
import signal
import threading

import tensorflow as tf

from tfp_flowpp import model_builder
from tfp_flowpp.training import config as train_config_lib
from tfp_flowpp.training import optimization
from tfp_flowpp.training import workdir as workdir_lib

__all__ = [
    'make_checkpoint', 'restore_training_state', 'restore_for_inference',
    'ema_weights', 'restore_error',
    'RESTORE_ERRORS', 'CheckpointError'
]


class CheckpointError(ValueError):
  """A checkpoint that does not fit the model (one-line message)."""


# The optional objects of `make_checkpoint` (keyword and checkpoint key).
_OPTIONAL = ('consecutive_skips', 'loss_scale', 'clock')


def make_checkpoint(model, optimizer, step, skipped, consecutive_skips=None,
                    loss_scale=None, clock=None):
  """The run's `tf.train.Checkpoint` (the optional objects only if given).

  ``consecutive_skips`` is saved since v0.2, ``loss_scale`` (the
  `DynamicLossScale`, under the same key in every precision) since v0.2,
  ``clock`` (training wall and CPU seconds so far) since v0.3.
  """
  given = dict(consecutive_skips=consecutive_skips, loss_scale=loss_scale,
               clock=clock)
  extra = {key: given[key] for key in _OPTIONAL if given[key] is not None}
  return tf.train.Checkpoint(
      model=model, optimizer=optimizer, step=step, skipped=skipped, **extra)


def restore_training_state(checkpoint, path):
  """Restores the checkpoint ``path`` into the `make_checkpoint` ``checkpoint``.

  Checkpoints written before ``consecutive_skips``, the loss scale or the
  clock were saved restore everything else and leave those as they are (0
  and the initial scale in a new `Trainer`, what those versions resumed
  with).

  Returns:
    The names of the checkpoint's variables (to tell which it held).

  Raises:
    One of `RESTORE_ERRORS` if the checkpoint does not fit or is unreadable.
  """
  names = [name for name, _ in tf.train.list_variables(path)]
  optional = {key: getattr(checkpoint, key, None) for key in _OPTIONAL}
  held = {key: any(name.startswith(f'{key}/') for name in names)
          for key in _OPTIONAL}
  if any(value is not None and not held[key]
         for key, value in optional.items()):
    checkpoint = make_checkpoint(
        checkpoint.model, checkpoint.optimizer, checkpoint.step,
        checkpoint.skipped,
        **{key: value if held[key] else None
           for key, value in optional.items()})
  checkpoint.restore(path).assert_existing_objects_matched()
  return names


@contextlib.contextmanager
def _signals_deferred(signals=(signal.SIGINT, signal.SIGTERM)):
  """Holds SIGINT/SIGTERM until the block ends, then delivers them.

  Python runs signal handlers in the main thread between bytecodes, so a
  handler that raises (Ctrl-C, the trainer's SIGTERM) could interrupt a
  loop of assignments halfway. Inside the block such signals are only
  recorded; on exit the previous handlers are back and each recorded signal
  is raised again (`signal.raise_signal` runs its handler at once). Blocking
  the signal with ``pthread_sigmask`` would not do: the kernel hands it to
  one of TensorFlow's threads and Python still runs the handler in the main
  thread. Outside the main thread handlers cannot be changed (nor run), and
  the block runs as is.
  """
  if threading.current_thread() is not threading.main_thread():
    yield
    return
  pending = []
  previous = {s: signal.getsignal(s) for s in signals}
  for s in signals:
    signal.signal(s, lambda signum, frame: pending.append(signum))
  try:
    yield
  finally:
    for s, handler in previous.items():
      signal.signal(s, handler)
    for s in pending:
      signal.raise_signal(s)


class ema_weights:  # pylint: disable=invalid-name
  """Context manager: the model holds its EMA weights inside the block.

  Uses the optimizer's own `finalize_variable_values` and restores the raw
  training weights on exit (also on errors). A no-op without EMA. Both swaps
  are atomic: SIGINT/SIGTERM arriving during one are handled after it, and
  if the swap in fails (or such a signal arrives during it) the raw weights
  are restored before the exception propagates -- so a checkpoint written by
  an interrupt handler never holds half-swapped weights.
  """

  def __init__(self, model, optimizer):
    self.variables = model.trainable_variables
    self.optimizer = optimizer
    self.backup = None

  def __enter__(self):
    if self.optimizer.use_ema:
      try:
        with _signals_deferred():
          self.backup = [tf.identity(v) for v in self.variables]
          self.optimizer.finalize_variable_values(self.variables)
      except BaseException:
        self._restore()
        raise
    return self

  def __exit__(self, *exc):
    self._restore()
    return False

  def _restore(self):
    if self.backup is not None:
      with _signals_deferred():
        for variable, value in zip(self.variables, self.backup):
          variable.assign(value)
        self.backup = None


# What `tf.train.Checkpoint.read/restore` raise for a checkpoint that does
# not fit the objects (AssertionError, ValueError, NotFoundError) or whose
# files are truncated or corrupted (IndexError from the bundle reader,
# DataLossError, other OpErrors).
RESTORE_ERRORS = (AssertionError, ValueError, IndexError, tf.errors.OpError)


def restore_error(path, error, what='this architecture'):
  """A one-line `CheckpointError` for an exception in `RESTORE_ERRORS`."""
  first = (str(error).strip().splitlines() or [type(error).__name__])[0]
  if isinstance(error, (IndexError, tf.errors.DataLossError)) or any(
      word in first.lower() for word in ('corrupt', 'truncat', 'checksum')):
    return CheckpointError(
        f'Checkpoint {path} is unreadable (truncated or corrupted files): '
        f'{first[:200]}')
  return CheckpointError(
      f'Checkpoint {path} does not match {what}: {first[:200]}')


def restore_for_inference(workdir_path,
                          use_ema=True,
                          checkpoint_path=None,
                          model_fn=None,
                          precision=None,
                          attention_kernel=None):
  """Rebuilds a trained model from a workdir with its EMA weights in place.

  Args:
    workdir_path: a directory written by `bin/train`.
    use_ema: load the Polyak-averaged weights (what the paper evaluates).
    checkpoint_path: a specific checkpoint prefix; default the latest.
    model_fn: the ``model_fn(model_config)`` the run was trained with
      (`Trainer`'s); default `model_builder.build_model`.
    precision: what the rebuilt model's networks compute in (a
      `tfp_flowpp.precision` policy); default the run's. Checkpoints hold
      the same variables under every precision.
    attention_kernel: how the rebuilt model's attention computes (one of
      `networks.fused_attention.KERNELS`); default the run's.

  Returns:
    ``(model, configs, step)`` — configs is the raw dict of config.json.

  Raises:
    WorkdirError / CheckpointError with a one-line message.
  """
  workdir = workdir_lib.Workdir(workdir_path)
  configs = workdir.read_configs()
  model_config = workdir.model_config()
  if precision is not None:
    model_config = model_config.replace(precision=precision)
  if attention_kernel is not None:
    model_config = model_config.replace(attention_kernel=attention_kernel)
  train_config = train_config_lib.TrainConfig(**configs['train'])
  path = checkpoint_path or tf.train.latest_checkpoint(workdir.checkpoint_dir)
  if not path:
    raise CheckpointError(f'No checkpoint in {workdir.checkpoint_dir}.')
  model = (model_fn or model_builder.build_model)(model_config)
  optimizer = optimization.make_optimizer(train_config)
  optimizer.build(model.trainable_variables)
  step = tf.Variable(0, dtype=tf.int64, trainable=False)
  skipped = tf.Variable(0, dtype=tf.int64, trainable=False)
  checkpoint = make_checkpoint(model, optimizer, step, skipped)
  try:
    status = checkpoint.read(path)
    status.assert_existing_objects_matched()
    status.expect_partial()  # The manager's save counter is not needed.
  except RESTORE_ERRORS as e:
    raise restore_error(
        path, e, f'the architecture in {workdir.config_path}') from e
  if use_ema and optimizer.use_ema:
    optimizer.finalize_variable_values(model.trainable_variables)
  bad = [
      v.name
      for v in model.trainable_variables
      if not bool(tf.reduce_all(tf.math.is_finite(v)))
  ]
  if bad:
    raise CheckpointError(f'Checkpoint {path} holds non-finite weights '
                          f'({bad[0]}).')
  return model, configs, int(step.numpy())
