"""The run directory: configs, metrics log and compatibility checks.

Layout::

    WORKDIR/config.json          model, data and train configs of the run
    WORKDIR/checkpoints/         tf.train.CheckpointManager files
    WORKDIR/metrics.jsonl        one JSON object per evaluation
    WORKDIR/tensorboard/         tf.summary event files
    WORKDIR/figures/             samples_STEP.png, bpd_curve.png
"""

import dataclasses
import json
import os

from tfp_flowpp import config as model_config_lib
from tfp_flowpp.training import atomic_files

__all__ = ['Workdir', 'WorkdirError']

# Model fields that do not change the variables (safe to change on resume).
_NON_ARCHITECTURE_FIELDS = ('dropout', 'precision', 'attention_kernel')


class WorkdirError(ValueError):
  """A workdir that cannot be used as asked (one-line message)."""


class Workdir:
  """Paths and bookkeeping files of one training run."""

  def __init__(self, path):
    self.path = os.path.abspath(os.path.expanduser(path))

  @property
  def config_path(self):
    return os.path.join(self.path, 'config.json')

  @property
  def checkpoint_dir(self):
    return os.path.join(self.path, 'checkpoints')

  @property
  def metrics_path(self):
    return os.path.join(self.path, 'metrics.jsonl')

  @property
  def tensorboard_dir(self):
    return os.path.join(self.path, 'tensorboard')

  @property
  def figures_dir(self):
    return os.path.join(self.path, 'figures')

  def exists(self):
    return os.path.exists(self.config_path)

  def has_checkpoint(self):
    return os.path.exists(os.path.join(self.checkpoint_dir, 'checkpoint'))

  # Configs --------------------------------------------------------------------

  def read_configs(self):
    """Returns the raw dict stored in config.json."""
    if not self.exists():
      raise WorkdirError(f'{self.path} is not a tfp_flowpp workdir (no '
                         'config.json); train one with bin/train first.')
    try:
      with open(self.config_path) as f:
        return json.load(f)
    except (OSError, json.JSONDecodeError) as e:
      raise WorkdirError(f'Cannot read {self.config_path}: {e}') from e

  def model_config(self):
    return model_config_lib.ModelConfig.from_json(
        json.dumps(self.read_configs()['model']))

  def check_compatible(self, model_config):
    """Raises if the workdir holds a run of a different architecture."""
    if not self.exists():
      if self.has_checkpoint():
        raise WorkdirError(f'{self.path} has checkpoints but no config.json; '
                           'use a fresh --workdir.')
      return
    stored = self.read_configs().get('model', {})
    new = dataclasses.asdict(model_config)
    stored = {
        k: tuple(v) if isinstance(v, list) else v for k, v in stored.items()
    }
    # Fields added after the run was written take the value older runs
    # implied (as `ModelConfig.from_json` reads them).
    for field in dataclasses.fields(model_config_lib.ModelConfig):
      if field.name not in stored:
        stored[field.name] = field.metadata.get('stored_default',
                                                field.default)
    diffs = [
        f'{k}: {stored.get(k)!r} -> {new[k]!r}' for k in sorted(new)
        if k not in _NON_ARCHITECTURE_FIELDS and stored.get(k) != new[k]
    ]
    if diffs:
      raise WorkdirError(
          f'{self.path} holds a checkpoint of a different architecture '
          f'({"; ".join(diffs[:3])}{"; ..." if len(diffs) > 3 else ""}); '
          'use a new --workdir or the original flags.')

  def write_configs(self, model_config, data_config, train_config):
    payload = {
        'model': dataclasses.asdict(model_config),
        'data': dataclasses.asdict(data_config),
        'train': dataclasses.asdict(train_config),
    }
    atomic_files.atomic_write_bytes(
        self.config_path,
        (json.dumps(payload, indent=2, sort_keys=True) + '\n').encode())

  # Metrics ----------------------------------------------------------------------

  def read_metrics(self):
    """All complete metric records (a torn last line is ignored)."""
    if not os.path.exists(self.metrics_path):
      return []
    records = []
    with open(self.metrics_path) as f:
      for line in f:
        try:
          records.append(json.loads(line))
        except json.JSONDecodeError:
          break
    return records

  def append_metrics(self, record):
    line = json.dumps(record, sort_keys=True) + '\n'
    with open(self.metrics_path, 'a') as f:
      f.write(line)
      f.flush()
      os.fsync(f.fileno())

  def truncate_metrics(self, max_step):
    """Drops records after ``max_step`` (written before a kill, now redone)."""
    records = self.read_metrics()
    kept = [r for r in records if r.get('step', 0) <= max_step]
    if len(kept) != len(records) or (os.path.exists(self.metrics_path) and
                                     records != kept):
      payload = ''.join(json.dumps(r, sort_keys=True) + '\n' for r in kept)
      atomic_files.atomic_write_bytes(self.metrics_path, payload.encode())
    return kept
