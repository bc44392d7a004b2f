"""Bit-reproducible training (``TrainConfig.deterministic``).

TensorFlow's CPU kernels are not deterministic by default: two identical
runs drift apart by float rounding within a few steps. `enable` switches the
process to deterministic kernels (`tf.config.experimental.enable_op_determinism`
-- which also makes `tf.data` deterministic and rejects kernels without a
deterministic implementation) and sets the global TF seed, which op
determinism requires of every stateful random op. Everything the training
step draws (dequantization noise, dropout masks, data order) is already
stateless and seeded by the step, so with this a run is a function of its
configs: resumed and uninterrupted runs are bit-identical. It is global and
cannot be undone in the process; call it before any op runs.
"""

import tensorflow as tf

__all__ = ['enable']


def enable(seed):
  """Deterministic kernels and global seed ``seed`` for this process."""
  tf.config.experimental.enable_op_determinism()
  tf.random.set_seed(seed)
