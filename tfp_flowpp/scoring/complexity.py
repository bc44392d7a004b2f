"""Input complexity: lossless code lengths and the corrected score of Serrà et al.

Simple inputs (constant images, smooth digits) get high likelihood under
almost any image model, which is why raw likelihood can rank them as *more*
in-distribution than the training data. Serrà et al. (2020) subtract a
generic lossless compressor's code length L(x) (bits) as an estimate of the
input's complexity:

    S(x) = −log2 p(x) − L(x),   here per dimension:  bpd(x) − L(x) / D,

a likelihood ratio against a universal "any image" model; higher S means
more out of distribution. L(x) is the length of a real file written by
Pillow:

* ``png``: PNG with ``optimize=True`` (zlib level 9 plus Pillow's search over
  filter settings), the codec Serrà et al. found robust;
* ``webp``: WebP lossless with libwebp's default method 4 at the highest
  effort (``lossless=True, quality=100, method=4``). Method 6 codes
  Fashion-MNIST 1.9% shorter (4.42 against 4.51 bits/dim on 100 test
  images) but took 20x longer (26 against 1.2 ms per 28x28 image), more
  than the model's own bound.

Both are lossless for 8-bit grayscale and RGB, so L(x) is an honest code
length. Images with fewer than 256 levels are coded as their level values
(e.g. 0..16). The length includes the container's constant overhead (for
PNG the 8-byte signature and the IHDR/IEND chunks): a constant per image
size, so it shifts S without changing its ranking among images of one size.

``flowpp`` (`MODEL_CODEC`) is our own code length: the bits
`tfp_flowpp.compression.Codec.code_lengths` spends on the image, coded alone
with local bits-back coding under a *second* model (a `Codec` handed to
`ImageScorer`). Serrà et al. found that the better the generic compressor,
the better S works; a flow trained on broad images of the same shape is a
far better image compressor than PNG. Under the scored model itself L(x) is
that model's own code length, so S collapses to the bound's noise minus the
coding overhead and carries no information: use another model, one trained
on broad images of this shape and levels (the likelihood ratio's background
model is the bound-based relative of this score).

Reference:
  Serrà, Álvarez, Gómez, Slizovskaia, Núñez, Luque. Input Complexity and
  Out-of-Distribution Detection with Likelihood-Based Generative Models.
  ICLR 2020. arXiv:1909.11480.
"""

import io

import numpy as np
from PIL import Image

from tfp_flowpp.scoring import per_image

__all__ = ['CODEC_OPTIONS', 'MODEL_CODEC', 'check_codec', 'code_length_bits',
           'complexity_corrected_bpd', 'encode', 'load_codec']

# Pillow format and save() options of each codec.
CODEC_OPTIONS = {
    'png': ('PNG', {'optimize': True}),
    'webp': ('WEBP', {'lossless': True, 'quality': 100, 'method': 4}),
}

# Column name of our own code length (a `compression.Codec`'s).
MODEL_CODEC = 'flowpp'

_MODES = {'png': {1: 'L', 2: 'LA', 3: 'RGB', 4: 'RGBA'},
          'webp': {1: 'L', 3: 'RGB', 4: 'RGBA'}}


def _pil_image(image, codec):
  channels = image.shape[-1]
  mode = _MODES[codec].get(channels)
  if mode is None:
    raise ValueError(f'the {codec} codec cannot code {channels}-channel '
                     f'images; use one of '
                     f'{", ".join(map(str, sorted(_MODES[codec])))} '
                     f'channels or another codec.')
  return Image.fromarray(image[..., 0] if channels == 1 else image, mode)


def encode(image, codec='png'):
  """Compressed bytes of one uint8 ``[H, W, C]`` image."""
  if codec not in CODEC_OPTIONS:
    raise ValueError(f'unknown codec {codec!r}; use one of '
                     f'{", ".join(CODEC_OPTIONS)}.')
  fmt, options = CODEC_OPTIONS[codec]
  buffer = io.BytesIO()
  _pil_image(image, codec).save(buffer, format=fmt, **options)
  return buffer.getvalue()


def code_length_bits(images, codec='png'):
  """L(x) in bits: 8 × the compressed size of each image in bytes.

  Args:
    images: integer array ``[N, H, W, C]`` with values in ``[0, 256)``.
    codec: ``'png'`` or ``'webp'`` (see `CODEC_OPTIONS`).

  Returns:
    int64 ``np.ndarray`` ``[N]``.
  """
  images = np.asarray(images)
  if images.ndim != 4:
    raise ValueError(f'images must be [N, H, W, C], got shape '
                     f'{images.shape}.')
  if images.size and (images.min() < 0 or images.max() > 255):
    raise ValueError('images must have pixel values in [0, 255] for a '
                     'lossless 8-bit codec.')
  images = images.astype(np.uint8, copy=False)
  return np.array([8 * len(encode(image, codec)) for image in images],
                  np.int64)


def check_codec(model, codec):
  """Raises ValueError unless ``codec`` codes the model's kind of image."""
  per_image.check_same_images(model, codec, 'the complexity model')


def load_codec(workdir, model, name=None):
  """The `compression.Codec` of the generic run in ``workdir``, for ``model``.

  Restores the run (EMA weights) and checks that it codes the scored model's
  kind of image (shape and levels).

  Args:
    workdir: a run of `bin/train` (the generic model).
    model: the scored model.
    name: what the errors call the run (e.g. a flag); default ``workdir``.

  Raises:
    ValueError: a missing or broken run (the workdir's own one-line error),
      or ``"<name>: ..."`` if the run codes other images.
  """
  # Imported here: compression and training import scoring's siblings.
  from tfp_flowpp import compression  # pylint: disable=g-import-not-at-top
  from tfp_flowpp import training  # pylint: disable=g-import-not-at-top
  generic, _, _ = training.restore_for_inference(workdir)
  try:
    codec = compression.Codec(generic,
                              training.Workdir(workdir).model_config())
    check_codec(model, codec)
  except ValueError as e:
    raise ValueError(f'{name or workdir}: {e}') from None
  return codec


def complexity_corrected_bpd(bpd, code_bits, num_dims):
  """S(x) / D = bpd(x) − L(x) / D (higher = more out of distribution)."""
  bpd = np.asarray(bpd, np.float64)
  code_bits = np.asarray(code_bits, np.float64)
  if bpd.shape != code_bits.shape:
    raise ValueError(f'bpd {bpd.shape} and code_bits {code_bits.shape} '
                     f'differ in shape.')
  return bpd - code_bits / float(num_dims)
