"""Bits-back coding of a batch of images with a `DiscreteImageFlow`.

Compressing images ``x`` (Ho et al. 2019, "Flow++" §3.1 and "Local
Bits-Back Coding" §3.5), with the coder as a stack:

1. *draw* the dequantization noise ``u`` from the stream under ``q(u|x)``:
   for the variational dequantizer draw ``ε ~ N(0, I)`` on the grid, then
   run the local bits-back steps of its flow ``ε → u`` (the couplings see
   the features of x); for uniform dequantization draw ``u`` uniformly;
2. ``y = x + u`` exactly on the grid (x integer, u in the bins of [0, 1));
3. run the local bits-back steps of the flow ``y → z``;
4. *push* ``z`` under the prior ``N(0, I)``.

The net code length is ``−log2 p(x + u) + log2 q(u|x)`` bits (the
single-sample dequantization bound at the coded ``u``) plus small terms of
order σ². Decompression pops ``z``, inverts the flow steps, takes
``x = floor(y)`` and ``u = y − x``, inverts the dequantizer's steps and
pushes ``ε`` back, leaving the stream as it was before the batch.
"""

import numpy as np
import tensorflow as tf

from tfp_flowpp.compression import flow_steps
from tfp_flowpp.compression import gaussian_coding
from tfp_flowpp.compression import local_bits_back as lbb
from tfp_flowpp.distributions import dequantization

__all__ = ['ImageCoder', 'CorruptStreamError']


class CorruptStreamError(ValueError):
  """Decoding produced impossible values (one-line message)."""


class ImageCoder:
  """Codes batches of integer images with a float64 `DiscreteImageFlow`."""

  def __init__(self, model, grid):
    """Compiles the model's flows into coding steps.

    Args:
      model: a float64 `DiscreteImageFlow` (see `float64_model`).
      grid: `CodingGrid`.
    """
    if model.float_dtype != tf.float64:
      raise ValueError('The coding path needs a float64 model; use '
                       'compression.float64_model(model, config).')
    self.model = model
    self.grid = grid
    self.image_shape = tuple(model.image_shape)
    self.num_levels = model.num_levels
    spec = tf.TensorSpec([None] + list(self.image_shape), tf.float64)
    self.flow, self.latent_shape = flow_steps.compile_flow(
        model.bijector, self.image_shape, grid)
    dequantizer = model.dequantizer
    self.variational = isinstance(dequantizer,
                                  dequantization.VariationalDequantizer)
    if self.variational:
      self._context = tf.function(dequantizer.context, input_signature=[spec])
      context_shape = tuple(
          self._context(tf.zeros([1] + list(self.image_shape),
                                 tf.float64)).shape[1:])
      self.noise_flow, noise_shape = flow_steps.compile_flow(
          dequantizer.bijector, self.image_shape, grid, context_shape)
      if noise_shape != self.image_shape:
        raise ValueError(f'The dequantizer maps to {noise_shape}, not the '
                         f'image shape {self.image_shape}.')
      # The last step squashes into (0, 1): its bins must stay in [0, 1),
      # and its tails hold many input bins per output bin.
      last = self.noise_flow.steps[-1]
      self.noise_flow.steps[-1] = lbb.Squash(last.transform, grid,
                                             name=last.name)
    elif not isinstance(dequantizer, dequantization.UniformDequantizer):
      raise ValueError(f'Unknown dequantizer {type(dequantizer).__name__}.')
    self._bound = tf.function(self._bound_impl, input_signature=[spec, spec])

  # Coding ---------------------------------------------------------------------

  def _prior_params(self, count):
    return (np.full(count, -0.5), np.full(count,
                                          self.grid.scale_to_bins(1.)))

  def encode(self, coder, images):
    """Pushes integer images ``[B, H, W, C]``; returns the noise bins."""
    images = np.asarray(images, np.int64)
    size = images.size
    if self.variational:
      mean, std = self._prior_params(size)
      k_eps = gaussian_coding.decode_bounded(coder, mean, std).reshape(
          images.shape)
      context = self._context(tf.constant(images, tf.float64))
      k_u = self.noise_flow.encode(coder, k_eps, context)
    else:
      k_u = gaussian_coding.decode_bits(
          coder, np.full(size, self.grid.grid_bits)).reshape(images.shape)
    k_y = (images << self.grid.grid_bits) + k_u
    k_z = self.flow.encode(coder, k_y)
    mean, std = self._prior_params(k_z.size)
    gaussian_coding.encode_escapable(coder, k_z, mean, std)
    return k_u

  def decode(self, coder, batch_size):
    """Pops ``batch_size`` images; returns ``(images int64, noise bins)``."""
    shape = (int(batch_size),) + tuple(self.latent_shape)
    mean, std = self._prior_params(int(np.prod(shape)))
    k_z = gaussian_coding.decode_escapable(coder, mean, std).reshape(shape)
    k_y = self.flow.decode(coder, k_z)
    images = k_y >> self.grid.grid_bits
    if images.min() < 0 or images.max() >= self.num_levels:
      raise CorruptStreamError(
          f'decoded pixel values outside [0, {self.num_levels}); the stream '
          'does not belong to this model or coding environment.')
    k_u = k_y - (images << self.grid.grid_bits)
    if self.variational:
      context = self._context(tf.constant(images, tf.float64))
      k_eps = self.noise_flow.decode(coder, k_u, context)
      mean, std = self._prior_params(k_eps.size)
      gaussian_coding.encode_bounded(coder, k_eps, mean, std)
    else:
      gaussian_coding.encode_bits(coder, k_u,
                                  np.full(k_u.size, self.grid.grid_bits))
    return images, k_u

  # Bound at the coded noise ---------------------------------------------------------

  def _bound_impl(self, images, u):
    log_p = self.model.continuous_log_prob(images + u)
    if self.variational:
      dequantizer = self.model.dequantizer
      log_q = dequantizer.distribution.log_prob(
          u, bijector_kwargs=dequantizer.bijector_kwargs(images))
    else:
      log_q = tf.zeros_like(log_p)
    return log_p - log_q

  def bound(self, images, k_u):
    """``log p(x + u) − log q(u|x)`` in nats per image at the coded ``u``."""
    u = self.grid.values(k_u)
    return self._bound(
        tf.constant(np.asarray(images, np.float64)), tf.constant(u)).numpy()
