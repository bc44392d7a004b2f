"""Bit-reproducible training (``TrainConfig.deterministic``).

TensorFlow's CPU execution is not deterministic by default: two identical
runs drift apart by float rounding within a few steps. `enable` makes this
process deterministic:

* `tf.config.experimental.enable_op_determinism`: deterministic kernels and
  `tf.data` (kernels without a deterministic implementation raise);
* a global TF seed, which op determinism requires of every stateful random
  op (the training step itself draws only stateless, step-seeded noise:
  dequantization, dropout masks, data order);
* one inter-op thread. Op determinism alone is not enough on CPU: two
  20-step runs of configs/quickstart.flags with it still differed in 1,149
  of 1,240 checkpoint tensors (max |Δ| 1.2e-7), and replaying 5 steps from
  the same state in one process changed 1,096 of 1,224 tensors (max |Δ|
  3e-8, with ``TF_ENABLE_ONEDNN_OPTS=0`` too); with one inter-op thread the
  replay changed none. Intra-op threads (the parallelism inside one matmul
  or convolution) are kept.

With it, a run is a function of its configs: a resumed run equals an
uninterrupted one bit for bit. It is global, cannot be undone, and the
thread setting must precede TensorFlow's first op in the process.
"""

import tensorflow as tf

__all__ = ['enable']


def enable(seed):
  """Deterministic kernels, one inter-op thread and TF seed ``seed``.

  Args:
    seed: the global TF seed (`tf.random.set_seed`).

  Raises:
    RuntimeError: TensorFlow already ran an op in this process with more
      than one inter-op thread (so determinism cannot be guaranteed).
  """
  try:
    tf.config.threading.set_inter_op_parallelism_threads(1)
  except RuntimeError as e:
    raise RuntimeError(
        'deterministic training must be enabled before TensorFlow runs its '
        'first op in the process (it needs one inter-op thread); start a '
        'fresh process, e.g. bin/train --deterministic.') from e
  tf.config.experimental.enable_op_determinism()
  tf.random.set_seed(seed)
