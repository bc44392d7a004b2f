"""The label side of a class-conditional flow p(x | y); see `ClassConditioning`.

Holds what a `DiscreteImageFlow` needs to condition on a class label y: the
learned label embedding its coupling networks (and its dequantizer) see as
context, Glow's class-conditional prior, and the training class frequencies
that turn the class-conditional likelihoods into a Bayes classifier.
"""

import math

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

tfd = tfp.distributions

__all__ = ['ClassConditioning', 'label_context_channels']


def label_context_channels(config, part):
  """Channels of label context a `ModelConfig` feeds to ``part``'s couplings.

  Args:
    config: a `ModelConfig`.
    part: ``'flow'`` (the main flow's coupling networks) or ``'dequantizer'``
      (the variational dequantizer's).

  Returns:
    Python `int` E (the embedding width), or 0 when ``part`` sees no label.
  """
  if config.conditioning != 'class' or not config.class_embedding:
    return 0
  wanted = {'flow': config.class_context,
            'dequantizer': config.class_dequantizer}[part]
  return int(config.class_embedding) if wanted else 0


class ClassConditioning(tf.Module):
  """Label embedding, class-conditional prior and class frequencies.

  A class-conditional flow [(Kingma & Dhariwal, 2018)][1] models
  p(x | y) for labels y ∈ {0, …, K−1} with up to three label paths, each
  optional:

  ```none
  e(y) = E[y] ∈ R^{1×1×F}                 label embedding (init N(0, 1)),
                                          context of the coupling networks
                                          (broadcast over H×W) and/or of the
                                          dequantizer q(u | x, y)
  p(z | y) = N(z; μ_y, diag(exp(2 s_y)))  class-conditional prior, μ_y and
                                          s_y ∈ R^{H×W×C} (init 0, i.e. N(0, I))
  p(y) = π_y                              training class frequencies
  p(y | x) = softmax_y(log P(x | y) + log π_y)          Bayes' rule
  ```

  The prior covers every latent dimension, including those a multi-scale
  flow factors out (the latent is image-shaped). ``log_class_frequencies``
  is a non-trainable, checkpointed variable (initially uniform) that the
  trainer sets from the training labels (`set_class_counts`).

  #### Examples

  >>> import numpy as np
  >>> import tensorflow as tf
  >>> from tfp_flowpp import distributions as fd
  >>> classes = fd.ClassConditioning(
  ...     3, (2, 2, 1), embedding_channels=4, rng=np.random.default_rng(0))
  >>> labels = classes.check_labels([0, 2])
  >>> classes.embedding(labels).shape
  TensorShape([2, 1, 1, 4])
  >>> prior = classes.prior(labels)  # N(0, I) per class at initialisation.
  >>> prior.batch_shape, prior.event_shape
  (TensorShape([2]), TensorShape([2, 2, 1]))
  >>> classes.set_class_counts([1, 1, 2])
  >>> np.exp(classes.log_class_frequencies.numpy())
  array([0.25, 0.25, 0.5 ], dtype=float32)
  >>> try:
  ...   classes.check_labels([3])
  ... except tf.errors.InvalidArgumentError:
  ...   print('rejected')
  rejected

  #### References

  [1]: Diederik P. Kingma and Prafulla Dhariwal. Glow: Generative Flow with
       Invertible 1x1 Convolutions. In _Neural Information Processing
       Systems_, 2018. https://arxiv.org/abs/1807.03039
  """

  def __init__(self,
               num_classes,
               image_shape,
               embedding_channels=0,
               prior=True,
               dtype=tf.float32,
               rng=None,
               name='class_conditioning'):
    """Creates the variables.

    Args:
      num_classes: K ≥ 1.
      image_shape: ``(H, W, C)``, the latent shape of the prior.
      embedding_channels: width F of the label embedding; 0 = none.
      prior: Python `bool`, learn the class-conditional prior (else every
        class has the N(0, I) prior).
      dtype: float dtype.
      rng: `np.random.Generator` for the embedding's initial values.
      name: module name.
    """
    super().__init__(name=name)
    if int(num_classes) < 1:
      raise ValueError(f'num_classes must be >= 1, got {num_classes}.')
    self.num_classes = int(num_classes)
    self.image_shape = tuple(int(d) for d in image_shape)
    self.embedding_channels = int(embedding_channels)
    self.dtype = tf.as_dtype(dtype)
    rng = rng if rng is not None else np.random.default_rng()
    with self.name_scope:
      self.embedding_table = None
      if self.embedding_channels:
        self.embedding_table = tf.Variable(
            tf.constant(
                rng.normal(size=(self.num_classes, self.embedding_channels)),
                self.dtype),
            name='embedding')
      self.prior_mean = self.prior_log_scale = None
      if prior:
        shape = (self.num_classes,) + self.image_shape
        self.prior_mean = tf.Variable(
            tf.zeros(shape, self.dtype), name='prior_mean')
        self.prior_log_scale = tf.Variable(
            tf.zeros(shape, self.dtype), name='prior_log_scale')
      self.log_class_frequencies = tf.Variable(
          tf.fill([self.num_classes],
                  tf.constant(-math.log(self.num_classes), self.dtype)),
          trainable=False,
          name='log_class_frequencies')

  def check_labels(self, labels):
    """Integer labels → int32, asserting ``0 <= label < K`` in the graph."""
    labels = tf.convert_to_tensor(labels)
    if not labels.dtype.is_integer:
      raise TypeError(f'labels must be integer class indices in [0, '
                      f'{self.num_classes}), got dtype {labels.dtype.name}.')
    labels = tf.cast(labels, tf.int32)
    checks = [
        tf.debugging.assert_greater_equal(
            labels, 0,
            message=f'labels must be class indices in [0, {self.num_classes})'),
        tf.debugging.assert_less(
            labels, self.num_classes,
            message=f'labels must be class indices in [0, {self.num_classes})'),
    ]
    with tf.control_dependencies(checks):
      return tf.identity(labels)

  def embedding(self, labels):
    """``[..., 1, 1, F]`` label embeddings (None without an embedding)."""
    if self.embedding_table is None:
      return None
    return tf.gather(self.embedding_table, labels)[..., tf.newaxis,
                                                   tf.newaxis, :]

  def prior(self, labels):
    """p(z | y) for labels ``[...]``: batch shape ``[...]``, image events."""
    if self.prior_mean is None:
      loc = tf.zeros(tf.concat([tf.shape(labels), self.image_shape], 0),
                     self.dtype)
      scale = tf.ones_like(loc)
    else:
      loc = tf.gather(self.prior_mean, labels)
      scale = tf.exp(tf.gather(self.prior_log_scale, labels))
    return tfd.Independent(
        tfd.Normal(loc, scale), reinterpreted_batch_ndims=3, name='prior')

  def latents(self, noise, labels):
    """``μ_y + exp(s_y) · noise``: standard-normal draws → p(z | y) draws."""
    if self.prior_mean is None:
      return noise
    return (tf.gather(self.prior_mean, labels) +
            tf.exp(tf.gather(self.prior_log_scale, labels)) * noise)

  def set_class_counts(self, counts):
    """Sets the class frequencies π from training label counts ``[K]``."""
    counts = np.asarray(counts, np.float64)
    if counts.shape != (self.num_classes,) or counts.min() < 0 or not (
        counts.sum() > 0):
      raise ValueError(f'class counts must be {self.num_classes} '
                       f'non-negative numbers, not all 0; got {counts}.')
    with np.errstate(divide='ignore'):
      log_freq = np.log(counts / counts.sum())
    self.log_class_frequencies.assign(tf.constant(log_freq, self.dtype))
