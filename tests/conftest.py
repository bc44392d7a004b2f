"""Test session setup: quiet TF logs, two logical CPU devices for the
`tf.distribute` tests (must be configured before TensorFlow initialises its
devices, hence here)."""

import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import tensorflow as tf  # pylint: disable=g-import-not-at-top

_cpus = tf.config.list_physical_devices('CPU')
if _cpus:
  try:
    tf.config.set_logical_device_configuration(
        _cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)
  except RuntimeError:  # Already initialised by an earlier import.
    pass
