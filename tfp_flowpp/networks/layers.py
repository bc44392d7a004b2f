"""Small `tf.Module` layers with explicit shapes, built eagerly.

Plain `tf.Module`s (not Keras 3 layers) so every variable is visible through a
bijector's ``trainable_variables`` and is created at construction time, under
whatever `tf.distribute` strategy scope is active — never lazily inside
``strategy.run``.

Initial values come from a NumPy generator (``rng``) so a model built from a
seed is identical in every process and under every `tf.distribute` strategy.
Initialisation replaces the official code's data-dependent conv init with its
data-free equivalent: kernels ~ N(0, init_scale² / fan_in), so a layer fed
unit-variance inputs starts with outputs of standard deviation ≈
``init_scale`` (1 for hidden layers, 0.1 for the last layer of a residual
branch and for the coupling parameters, as in the official code).
"""

import math

import numpy as np
import tensorflow as tf

__all__ = ['Conv2D', 'LayerNorm', 'concat_elu', 'gate', 'default_rng']


def default_rng(rng):
  """Returns ``rng`` or a fresh unseeded NumPy generator."""
  return rng if rng is not None else np.random.default_rng()


def concat_elu(x):
  """``elu([x, −x])`` along channels (PixelCNN++ nonlinearity)."""
  return tf.nn.elu(tf.concat([x, -x], axis=-1))


def gate(x):
  """GLU: splits channels in two and returns ``a · σ(b)``."""
  a, b = tf.split(x, 2, axis=-1)
  return a * tf.sigmoid(b)


class Conv2D(tf.Module):
  """SAME-padded, stride-1 convolution; 1×1 kernels run as a matmul.

  ``weight_norm=True`` reparameterises the kernel as ``g · v / ‖v‖`` per
  output channel (Salimans & Kingma 2016; the official ImageNet-32 model).
  """

  def __init__(self,
               in_channels,
               out_channels,
               kernel_size=3,
               init_scale=1.,
               zero_init=False,
               weight_norm=False,
               dtype=tf.float32,
               rng=None,
               name=None):
    super().__init__(name=name)
    self.in_channels = int(in_channels)
    self.out_channels = int(out_channels)
    self.kernel_size = int(kernel_size)
    self.weight_norm = bool(weight_norm)
    shape = [
        self.kernel_size, self.kernel_size, self.in_channels, self.out_channels
    ]
    fan_in = self.kernel_size**2 * self.in_channels
    with self.name_scope:
      if zero_init:
        init = np.zeros(shape)
      else:
        init = default_rng(rng).normal(
            0., init_scale / math.sqrt(fan_in), size=shape)
      if self.weight_norm:
        self.v = tf.Variable(tf.constant(init, dtype), name='v')
        norm = np.sqrt(np.sum(np.square(init), axis=(0, 1, 2)))
        self.g = tf.Variable(tf.constant(norm, dtype), name='g')
      else:
        self.kernel = tf.Variable(tf.constant(init, dtype), name='kernel')
      self.bias = tf.Variable(tf.zeros([self.out_channels], dtype), name='bias')

  def _kernel(self):
    if not self.weight_norm:
      return self.kernel
    return self.g * tf.math.l2_normalize(self.v, axis=[0, 1, 2], epsilon=1e-12)

  def __call__(self, x):
    kernel = tf.cast(self._kernel(), x.dtype)
    if self.kernel_size == 1:
      y = tf.linalg.matmul(tf.reshape(x, [-1, self.in_channels]), kernel[0, 0])
      y = tf.reshape(y, tf.concat([tf.shape(x)[:-1], [self.out_channels]], 0))
    else:
      y = tf.nn.conv2d(x, kernel, strides=1, padding='SAME')
    return tf.nn.bias_add(y, tf.cast(self.bias, x.dtype))


class LayerNorm(tf.Module):
  """Layer normalisation over the channel axis, ``eps = 1e-5``."""

  def __init__(self, channels, epsilon=1e-5, dtype=tf.float32, name=None):
    super().__init__(name=name)
    self.epsilon = float(epsilon)
    with self.name_scope:
      self.gamma = tf.Variable(tf.ones([channels], dtype), name='gamma')
      self.beta = tf.Variable(tf.zeros([channels], dtype), name='beta')

  def __call__(self, x):
    mean, variance = tf.nn.moments(x, axes=[-1], keepdims=True)
    return ((x - mean) * tf.math.rsqrt(variance + self.epsilon) *
            tf.cast(self.gamma, x.dtype) + tf.cast(self.beta, x.dtype))
