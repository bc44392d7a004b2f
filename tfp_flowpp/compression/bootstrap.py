"""Initial bits: the first images are coded classically, so bits-back has a source.

Bits-back coding *draws* bits from the stream before it writes any: the
first image needs about ``D·(2·grid_bits − noise_bits + 4)`` bits in the
stream (the dequantization noise and one layer's local noise on the fine
grid) before its own code is written. The usual remedy is a preamble of
random "initial bits", which the file must then carry in full. We instead
code the first images without bits-back — with WebP lossless (libwebp via
Pillow) or, when that is not smaller or not possible, with a plain uniform
code of ``log2 L`` bits per pixel — push those bits onto the stream, and
let the bits-back images draw from them. The overhead over the model's code
length is then only the classical codec's excess on those few images.

Both codes look random to the draws: WebP's output is compressed data, and
raw pixels are first offset by a fixed pseudo-random level (SplitMix64,
modulo L), which decoding removes.
"""

import io

import numpy as np

from tfp_flowpp.compression import gaussian_coding

__all__ = ['RAW', 'WEBP', 'encode', 'decode', 'webp_available']

RAW = 0
WEBP = 1
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MAX_WEBP_SIDE = 16383


def _offsets(count, num_levels):
  """``count`` pseudo-random levels in [0, L) (SplitMix64, seed 0)."""
  with np.errstate(over='ignore'):
    z = (np.arange(1, count + 1, dtype=np.uint64) * _GOLDEN)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z ^= z >> np.uint64(31)
  return (z % np.uint64(num_levels)).astype(np.int64)


def webp_available():
  """Whether Pillow was built with WebP support."""
  try:
    from PIL import features  # pylint: disable=g-import-not-at-top
    return bool(features.check('webp'))
  except ImportError:
    return False


def webp_bytes(images):
  """WebP lossless of the images stacked into one tall image, or None."""
  n, h, w, c = images.shape
  if c not in (1, 3) or n * h > _MAX_WEBP_SIDE or not webp_available():
    return None
  from PIL import Image  # pylint: disable=g-import-not-at-top
  tall = np.ascontiguousarray(images, np.uint8).reshape(n * h, w, c)
  image = Image.fromarray(tall[..., 0] if c == 1 else tall,
                          mode='L' if c == 1 else 'RGB')
  buffer = io.BytesIO()
  image.save(buffer, format='WEBP', lossless=True, quality=100, method=6)
  return buffer.getvalue()


def _from_webp(data, shape):
  from PIL import Image  # pylint: disable=g-import-not-at-top
  n, h, w, c = shape
  try:
    with Image.open(io.BytesIO(data)) as image:
      image = image.convert('L' if c == 1 else 'RGB')
      tall = np.asarray(image)
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(f'the bootstrap images do not decode as WebP '
                     f'({type(e).__name__}: {e}).') from None
  if tall.shape[:2] != (n * h, w):
    raise ValueError(f'the bootstrap WebP image is {tall.shape[:2]}, not '
                     f'{(n * h, w)}.')
  return tall.reshape(shape).astype(np.int64)


def encode(coder, images, num_levels, kind, webp=None):
  """Pushes images without bits-back; returns the number of WebP bytes.

  Args:
    coder: the ANS coder.
    images: integer ``[n, H, W, C]``.
    num_levels: L.
    kind: `RAW` or `WEBP`.
    webp: the images' `webp_bytes` (for ``kind == WEBP``).
  """
  if kind == WEBP:
    gaussian_coding.encode_uniform(coder, np.frombuffer(webp, np.uint8), 256)
    return len(webp)
  flat = np.asarray(images, np.int64).reshape(-1)
  scrambled = (flat + _offsets(flat.size, num_levels)) % num_levels
  gaussian_coding.encode_uniform(coder, scrambled, num_levels)
  return 0


def decode(coder, shape, num_levels, kind, num_bytes):
  """Pops images pushed by `encode`; returns int64 images of ``shape``."""
  if kind == WEBP:
    data = gaussian_coding.decode_uniform(coder, num_bytes, 256)
    if not webp_available():
      raise ValueError('the file starts with WebP-coded images but this '
                       'Pillow has no WebP support.')
    return _from_webp(data.astype(np.uint8).tobytes(), shape)
  count = int(np.prod(shape))
  scrambled = gaussian_coding.decode_uniform(coder, count, num_levels)
  flat = (scrambled - _offsets(count, num_levels)) % num_levels
  return flat.reshape(shape)
