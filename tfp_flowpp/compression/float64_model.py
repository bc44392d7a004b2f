"""The float64 twin of a trained model, for the coding path.

Bits-back coding needs the compressor and the decompressor to compute the
same model outputs bit for bit, and the local bits-back steps need more
precision than float32 offers (a grid of 2^-24 on values of order 100).
`float64_model` rebuilds the architecture of ``model_config`` with
``dtype='float64'`` -- networks included, whatever precision the model was
trained or restored in (bfloat16 networks would neither be reproducible
across CPUs nor precise enough), and with TensorFlow's attention ops (the
fused CPU kernel, `networks.fused_attention`, is compiled for the CPU at
hand by whatever compiler is there, which a compressed file's environment
fingerprint does not record) -- and copies every variable of the trained
model into it (variables are created in the same order, so they are matched
one to one by position, checking names and shapes), then checks that both
models map the same probe images to the same latents.
"""

import numpy as np
import tensorflow as tf

from tfp_flowpp import model_builder
from tfp_flowpp import precision
from tfp_flowpp.networks import blocks

__all__ = ['float64_model']


def float64_model(model, model_config):
  """Returns ``model`` (a `DiscreteImageFlow`) rebuilt in float64.

  Args:
    model: the trained model (any float dtype), e.g. from
      `training.restore_for_inference`.
    model_config: the `ModelConfig` it was built from.

  Raises:
    ValueError: the model does not match its config (one line).
  """
  policy = precision.policy_of(model)
  if (tf.as_dtype(model_config.dtype) == tf.float64 and
      policy == 'float32' and
      'fused' not in blocks.attention_kernel_of(model)):
    return model
  twin = model_builder.build_model(
      model_config.replace(
          dtype='float64', precision='float32',
          attention_kernel='tensorflow'))
  source, target = model.variables, twin.variables
  if len(source) != len(target):
    raise ValueError(f'The model has {len(source)} variables but its config '
                     f'builds {len(target)}; it was not built from this '
                     'config.')
  for s, t in zip(source, target):
    if s.name != t.name or s.shape != t.shape:
      raise ValueError(f'Variable {s.name} {s.shape} of the model does not '
                       f'match {t.name} {t.shape} of its config.')
    t.assign(tf.cast(s, t.dtype))
  _check_same_map(model, twin, 1e-3 if policy == 'float32' else 5e-2)
  return twin


def _check_same_map(model, twin, tolerance):
  """Both models must send probe images to (nearly) the same latents.

  Nearly: float32 rounding (1e-3), or that of 16-bit networks (5e-2; a
  bfloat16 model's latents differ from the float64 twin's by ~1e-2), both far
  below the O(1) differences of weights copied into the wrong architecture.
  """
  shape = (2,) + tuple(model.image_shape)
  probe = np.random.default_rng(0).integers(0, model.num_levels, shape)
  reference = model.encode(probe).numpy().astype(np.float64)
  latents = twin.encode(probe).numpy()
  scale = tolerance * (1. + np.abs(reference))
  if not np.all(np.abs(latents - reference) <= scale):
    raise ValueError('The float64 copy of the model disagrees with the '
                     'trained model (max latent difference '
                     f'{np.max(np.abs(latents - reference)):.3g}); the model '
                     'was not built from its config.')
