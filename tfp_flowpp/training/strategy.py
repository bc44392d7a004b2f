"""Choosing the `tf.distribute` strategy for a run.

``auto``: `MultiWorkerMirroredStrategy` when ``TF_CONFIG`` is set (one process
per host, each with its GPUs), `MirroredStrategy` over all visible GPUs when
there are any, otherwise the default (single-device) strategy. ``mirrored``
without GPUs can split the CPU into logical devices — how data parallelism
is tested on machines without accelerators.

A process gets one `MirroredStrategy` per device set: two instances over the
same devices hand their collectives the same instance keys, and the second
one's all-reduce of differently shaped gradients then fails ("Shape mismatch
in the collective instance"), e.g. when a second `Trainer` of another model
runs in the same process.
"""

import json
import logging
import os

import tensorflow as tf

__all__ = ['make_strategy', 'is_chief', 'task_name', 'describe']

_MIRRORED = {}  # Device names (or None: all GPUs) -> MirroredStrategy.


def _mirrored(devices=None):
  key = tuple(devices) if devices else None
  if key not in _MIRRORED:
    _MIRRORED[key] = tf.distribute.MirroredStrategy(devices)
  return _MIRRORED[key]


def _configure_cpu_replicas(count):
  cpus = tf.config.list_physical_devices('CPU')
  current = tf.config.list_logical_devices('CPU')
  if len(current) >= count:
    return [d.name for d in current[:count]]
  tf.config.set_logical_device_configuration(
      cpus[0], [tf.config.LogicalDeviceConfiguration()] * count)
  return [d.name for d in tf.config.list_logical_devices('CPU')[:count]]


def make_strategy(kind='auto', num_cpu_replicas=0):
  """Returns a `tf.distribute.Strategy` (see module docstring)."""
  if kind == 'auto':
    if os.environ.get('TF_CONFIG'):
      kind = 'multi_worker'
    elif tf.config.list_physical_devices('GPU'):
      kind = 'mirrored'
    elif num_cpu_replicas > 1:
      kind = 'mirrored'
    else:
      kind = 'default'
  if kind == 'multi_worker':
    if not os.environ.get('TF_CONFIG'):
      raise ValueError('distribution=multi_worker needs the TF_CONFIG '
                       'environment variable (cluster and task).')
    if num_cpu_replicas > 1 and not tf.config.list_physical_devices('GPU'):
      _configure_cpu_replicas(num_cpu_replicas)
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
  elif kind == 'mirrored':
    gpus = tf.config.list_logical_devices('GPU')
    if gpus:
      strategy = _mirrored()
    else:
      strategy = _mirrored(_configure_cpu_replicas(max(num_cpu_replicas, 1)))
  else:
    strategy = tf.distribute.get_strategy()
  logging.info('Using %s.', describe(strategy))
  return strategy


def describe(strategy):
  """``'MultiWorkerMirroredStrategy on 2 replica(s)'`` etc."""
  if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
    name = 'MultiWorkerMirroredStrategy'
  elif isinstance(strategy, tf.distribute.MirroredStrategy):
    name = 'MirroredStrategy'
  else:
    name = 'the default strategy'
  return f'{name} on {strategy.num_replicas_in_sync} replica(s)'


def task_name():
  """``'worker_1'`` etc. from TF_CONFIG, or ``'local'``."""
  config = os.environ.get('TF_CONFIG')
  if not config:
    return 'local'
  task = json.loads(config).get('task', {})
  return f"{task.get('type', 'worker')}_{task.get('index', 0)}"


def is_chief():
  """True unless this process is a non-chief worker of a TF_CONFIG cluster."""
  config = os.environ.get('TF_CONFIG')
  if not config:
    return True
  task = json.loads(config).get('task', {})
  kind, index = task.get('type'), task.get('index', 0)
  cluster = json.loads(config).get('cluster', {})
  if 'chief' in cluster:
    return kind == 'chief'
  return kind == 'worker' and index == 0
