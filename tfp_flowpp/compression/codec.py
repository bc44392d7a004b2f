"""Compress and decompress image sets with a trained `DiscreteImageFlow`.

`Codec` ties the pieces together:

* the model is rebuilt in float64 (`float64_model`) and TensorFlow runs
  deterministic kernels while it codes (`environment.deterministic`);
* the first ``bootstrap_images`` images are coded without bits-back (WebP
  lossless or raw, `bootstrap`) to supply the initial bits, the rest with
  bits-back coding (`bits_back.ImageCoder`) in batches that grow
  with the amount of data already in the stream, up to ``max_batch_size``
  (a batch of B images draws ~B times one image's initial bits);
* the result is one versioned file (`file_format`) holding the model and
  environment fingerprints and a digest of the pixels.

Decompression replays the same batch schedule in reverse (the coder is a
stack) and checks, in this order, the file's checksums, the model
fingerprint, every decoded pixel's range, that the stream is consumed
exactly, and the pixel digest — a wrong model, a corrupted file or a
different environment fails with a one-line error, never with wrong images.
"""

import dataclasses
import math
import time

import constriction
import numpy as np

from tfp_flowpp.compression import bits_back
from tfp_flowpp.compression import bootstrap
from tfp_flowpp.compression import environment
from tfp_flowpp.compression import file_format
from tfp_flowpp.compression import float64_model as float64_lib
from tfp_flowpp.compression import grid as grid_lib

__all__ = [
    'CodingConfig', 'CompressionError', 'CompressionStats', 'Codec',
    'batch_schedule'
]


class CompressionError(ValueError):
  """Input or file that cannot be (de)compressed as asked (one line)."""


@dataclasses.dataclass(frozen=True)
class CodingConfig:
  """How images are coded (stored in every file).

  Attributes:
    grid_bits: bins of width 2^-grid_bits for every coded quantity.
    noise_bits: local bits-back noise 2^-noise_bits.
    max_batch_size: images coded in parallel once the stream is long
      enough; more is faster but needs more data before it.
    bootstrap_margin: extra fraction of initial bits in the bootstrap.
  """

  grid_bits: int = 20
  noise_bits: int = 12
  max_batch_size: int = 64
  bootstrap_margin: float = 0.1

  def __post_init__(self):
    grid_lib.CodingGrid(self.grid_bits, self.noise_bits)  # Validates.
    if not 1 <= self.max_batch_size < 1 << 16:
      raise ValueError(f'max_batch_size must be in [1, 65535], got '
                       f'{self.max_batch_size}.')
    if not 0. <= self.bootstrap_margin <= 10.:
      raise ValueError(f'bootstrap_margin must be in [0, 10], got '
                       f'{self.bootstrap_margin}.')

  @property
  def grid(self):
    return grid_lib.CodingGrid(self.grid_bits, self.noise_bits)

  def initial_bits_per_dim(self):
    """Estimated stream bits one image draws before it writes its own.

    The dequantization noise on the grid (``grid_bits + 2``) plus the first
    local bits-back step's output noise (``grid_bits − noise_bits + 2``).
    """
    return 2 * self.grid_bits - self.noise_bits + 4


@dataclasses.dataclass
class CompressionStats:
  """Sizes and timing of one compression or decompression (bits unless noted).

  ``coded_bits`` is what the bits-back images added to the stream and
  ``bound_bits`` their single-sample bound ``−log2 p(x+u) + log2 q(u|x)``
  at the coded noise u, so ``coded_bits − bound_bits`` is the coding
  overhead proper; the rest of the file is the header, the bootstrap images
  (``bootstrap_bits``) and the ANS coder's final state.
  """

  num_images: int
  num_dims: int
  file_bytes: int
  header_bytes: int
  bootstrap_images: int
  bootstrap_bits: float
  coded_bits: float
  bound_bits: float
  seconds: float
  min_stream_bits: float = math.inf

  @property
  def bits_per_dim(self):
    """File size × 8 / (N·D)."""
    return 8. * self.file_bytes / (self.num_images * self.num_dims)

  @property
  def coded_images(self):
    return self.num_images - self.bootstrap_images

  def coded_bits_per_dim(self):
    """Bits-back part only: coded bits / (coded images · D)."""
    return self.coded_bits / max(1, self.coded_images * self.num_dims)

  def bound_bits_per_dim(self):
    return self.bound_bits / max(1, self.coded_images * self.num_dims)

  @property
  def images_per_second(self):
    return self.num_images / max(self.seconds, 1e-9)


def batch_schedule(num_images, bootstrap_images, growth_ratio, max_batch_size):
  """Sizes of the bits-back batches after the bootstrap images.

  Batch i holds ``clip(floor(n_i · ratio), 1, max_batch_size)`` images,
  where ``n_i`` images precede it (``growth_ratio`` is the ratio × 2^15):
  the stream then holds ~``n_i·D·bpd`` bits, enough for that many images'
  initial bits when ``ratio ≤ bpd / initial_bits_per_dim``. Integer
  arithmetic only, so both sides agree.
  """
  sizes, done = [], min(bootstrap_images, num_images)
  while done < num_images:
    size = min(max(1, (done * growth_ratio) >> 15), max_batch_size,
               num_images - done)
    sizes.append(size)
    done += size
  return sizes


class _TrackedCoder:
  """An AnsCoder that remembers the shortest stream seen after a decode."""

  def __init__(self, compressed=None):
    self.coder = (
        constriction.stream.stack.AnsCoder() if compressed is None else
        constriction.stream.stack.AnsCoder(compressed))
    self.min_bits = math.inf

  def decode(self, *args):
    out = self.coder.decode(*args)
    self.min_bits = min(self.min_bits, self.coder.num_valid_bits())
    return out

  def encode_reverse(self, *args):
    self.coder.encode_reverse(*args)

  def num_valid_bits(self):
    return self.coder.num_valid_bits()


class Codec:
  """Lossless compression of image sets with a trained `DiscreteImageFlow`.

  Each image ``x`` (after the first few, see `bootstrap`) is coded with
  bits-back coding over the dequantizer and local bits-back coding of the
  flow ``f = f_L ∘ … ∘ f_1`` (`bits_back.ImageCoder`), so that its share of
  the file is, up to terms of order σ² and the grid,

  ```none
  bits(x) = −log2 p(f(x + u)) − Σ_l log2 |det ∂f_l| + log2 q(u | x)
          = −log2 p(x + u) + log2 q(u | x),        u ~ q(· | x) from the stream
  ```

  the single-sample dequantization bound at the coded ``u``. The file adds a
  64-byte header and the initial bits (the bootstrap images' classical
  code above their model cost), which amortise as ``1/N``.

  #### Examples

  Compress a folder's worth of images with a trained run and get every byte
  back (the same in two processes; see `environment`):

  ```python
  from tfp_flowpp import compression, training
  model, _, _ = training.restore_for_inference(workdir)
  codec = compression.Codec(model, training.Workdir(workdir).model_config())
  data, stats = codec.compress(images)       # uint8 [N, H, W, C] → bytes
  compression.write_atomic('images.flowpp', data)
  restored, _ = codec.decompress(data)       # bit-exact
  print(stats.bits_per_dim, stats.bound_bits_per_dim())
  ```

  #### References

  [1]: Jonathan Ho, Evan Lohn and Pieter Abbeel. Compression with Flows via
       Local Bits-Back Coding. In _Neural Information Processing Systems_,
       2019. https://arxiv.org/abs/1905.08500

  [2]: Jonathan Ho, Xi Chen, Aravind Srinivas, Yan Duan and Pieter Abbeel.
       Flow++: Improving Flow-Based Generative Models with Variational
       Dequantization and Architecture Design. In _International Conference
       on Machine Learning_, 2019. https://arxiv.org/abs/1902.00275

  [3]: James Townsend, Tom Bird and David Barber. Practical Lossless
       Compression with Latent Variables using Bits Back Coding. In
       _International Conference on Learning Representations_, 2019.
       https://arxiv.org/abs/1901.04866
  """

  def __init__(self, model, model_config, config=None, threads=None):
    """Prepares the float64 coding path.

    Args:
      model: the trained `DiscreteImageFlow`.
      model_config: its `ModelConfig`.
      config: `CodingConfig` for compression (decompression reads the
        file's own).
      threads: intra-op threads for TensorFlow (None: keep the current
        setting); must be set before TensorFlow starts.
    """
    self.config = config or CodingConfig()
    # Conditional (class-label) models are planned; the file format reserves
    # a label flag and class count for them.
    for name in ('num_classes', 'label_classes', 'conditional'):
      if getattr(model_config, name, None):
        raise CompressionError('Conditional (class-label) models cannot be '
                               'compressed with this version of tfp_flowpp.')
    environment.configure(threads)
    self.model = model
    self.model_config = model_config
    self.fingerprint = file_format.model_fingerprint(model, model_config)
    self.image_shape = tuple(int(d) for d in model.image_shape)
    self.num_levels = int(model.num_levels)
    if not 2 <= self.num_levels <= 256:
      raise CompressionError(f'Images with {self.num_levels} levels per '
                             'pixel are not supported (uint8 only).')
    self.num_dims = int(math.prod(self.image_shape))
    self._model64 = None  # Built on first use (not needed to check files).
    self._coders = {}

  def _image_coder(self, grid_bits, noise_bits):
    key = (grid_bits, noise_bits)
    if key not in self._coders:
      self._coders[key] = bits_back.ImageCoder(
          self._float64_model(), grid_lib.CodingGrid(grid_bits, noise_bits))
    return self._coders[key]

  def _float64_model(self):
    if self._model64 is None:
      self._model64 = float64_lib.float64_model(self.model, self.model_config)
    return self._model64

  # Compression ------------------------------------------------------------------

  def _check_images(self, images):
    images = np.asarray(images)
    if images.ndim == 3 and self.image_shape[-1] == 1:
      images = images[..., np.newaxis]
    if images.ndim != 4 or tuple(images.shape[1:]) != self.image_shape:
      raise CompressionError(
          f'images have shape {images.shape[1:] if images.ndim else ()}; the '
          f'model codes {"x".join(map(str, self.image_shape))} images.')
    if not len(images):
      raise CompressionError('no images to compress.')
    if not np.issubdtype(images.dtype, np.integer):
      raise CompressionError(f'images must be integer, got {images.dtype}.')
    if images.min() < 0 or images.max() >= self.num_levels:
      raise CompressionError(
          f'pixel values must be in [0, {self.num_levels}) for this model, '
          f'found {images.min()}..{images.max()}.')
    if len(images) >= 1 << 32:
      raise CompressionError('at most 2^32 - 1 images per file.')
    return images.astype(np.uint8)

  def _bits_per_dim_estimate(self, images):
    """The model's single-sample bound on (up to 128 of) the images.

    From the float64 twin: the batch schedule it sets is part of the file, so
    it must not depend on the precision the model was restored in.
    """
    sample = images[:128].astype(np.int32)
    bpd = self._float64_model().bits_per_dim(sample, seed=[0, 0]).numpy()
    return float(np.mean(bpd))

  def _bootstrap(self, images, bpd):
    """``(count, codec, webp bytes)`` of the images coded without bits-back.

    Enough images to hold one image's initial bits (`CodingConfig.
    initial_bits_per_dim` plus the margin), coded raw or with WebP lossless,
    whichever costs fewer bits above the model's estimated ``bpd``.
    """
    n, dims = len(images), self.num_dims
    needed = (1. + self.config.bootstrap_margin) * (
        self.config.initial_bits_per_dim() * dims)
    raw_count = min(n, int(math.ceil(needed / (dims *
                                               math.log2(self.num_levels)))))
    best = (raw_count, bootstrap.RAW, b'')
    best_excess = raw_count * dims * (math.log2(self.num_levels) - bpd)
    if raw_count == n:  # Everything is bootstrap: just the smaller code.
      best_excess = n * dims * math.log2(self.num_levels)
    webp = bootstrap.webp_bytes(images[:1])
    if webp is None:
      return best
    # Smallest count whose WebP holds the bits: doubling, then bisection.
    low, high = 0, 1
    while high < n and 8 * len(bootstrap.webp_bytes(images[:high])) < needed:
      low, high = high, min(n, 2 * high)
    while high - low > 1:
      middle = (low + high) // 2
      if 8 * len(bootstrap.webp_bytes(images[:middle])) >= needed:
        high = middle
      else:
        low = middle
    webp = bootstrap.webp_bytes(images[:high])
    excess = 8 * len(webp) - (high * dims * bpd if high < n else 0.)
    if excess < best_excess and len(webp) < 1 << 32:
      best = (high, bootstrap.WEBP, webp)
    return best

  def compress(self, images, progress=None):
    """Compresses images; returns ``(file bytes, CompressionStats)``.

    Args:
      images: integer array ``[N, H, W, C]`` (or ``[N, H, W]`` for C = 1)
        with values in ``[0, L)``.
      progress: optional ``callable(images_done, num_images)``.
    """
    with environment.deterministic():
      return self._compress(images, progress)

  def _compress(self, images, progress):
    start = time.time()
    images = self._check_images(images)
    n = len(images)
    config = self.config
    coder = self._image_coder(config.grid_bits, config.noise_bits)
    bpd = self._bits_per_dim_estimate(images)
    num_boot, boot_codec, webp = self._bootstrap(images, bpd)
    ratio = int(
        np.clip(0.75 * bpd / config.initial_bits_per_dim() *
                file_format.RATIO_ONE, 1, file_format.RATIO_ONE))
    stream = _TrackedCoder()
    boot_bytes = bootstrap.encode(stream, images[:num_boot], self.num_levels,
                                  boot_codec, webp)
    boot_bits = stream.num_valid_bits()
    done = num_boot
    if progress:
      progress(done, n)
    coded_bits = bound_bits = 0.
    for size in batch_schedule(n, num_boot, ratio, config.max_batch_size):
      batch = images[done:done + size]
      before = stream.num_valid_bits()
      k_u = coder.encode(stream, batch)
      coded_bits += stream.num_valid_bits() - before
      bound_bits -= float(np.sum(coder.bound(batch, k_u))) / math.log(2.)
      done += size
      if progress:
        progress(done, n)
    header = self._header(images, config, num_boot, boot_codec, boot_bytes,
                          ratio)
    data = file_format.pack(header, stream.coder.get_compressed())
    stats = CompressionStats(
        num_images=n,
        num_dims=self.num_dims,
        file_bytes=len(data),
        header_bytes=file_format.HEADER_SIZE,
        bootstrap_images=num_boot,
        bootstrap_bits=float(boot_bits),
        coded_bits=coded_bits,
        bound_bits=bound_bits,
        seconds=time.time() - start,
        min_stream_bits=stream.min_bits)
    return data, stats

  def code_lengths(self, images, seed=(0,), progress=None):
    """The bits each image costs on its own: int64 ``[N]``.

    Image ``i`` is coded alone (bits-back, batch of one) onto a stream
    primed with twice `CodingConfig.initial_bits_per_dim` random bits drawn
    from ``default_rng([*seed, i])``; its length is the stream's growth,
    ``push − pop`` counted in whole bits by the ANS coder. That is the
    share the image would take of a long file (whose earlier images supply
    the bits it draws), so ``length / D`` is the real code length behind
    the single-sample bound, coding overhead included, and it is the same
    for an image whatever else is scored with it. One image at a time is
    slower than `compress` (no batching), and a per-image length exists only
    that way: images coded together share their ANS state.

    Args:
      images: integer array ``[N, H, W, C]`` (or ``[N, H, W]`` for C = 1)
        with values in ``[0, L)``.
      seed: integers keying the primed streams (with the image's index).
      progress: optional ``callable(images_done, num_images)``.
    """
    seed = (seed,) if isinstance(seed, (int, np.integer)) else tuple(seed)
    with environment.deterministic():
      images = self._check_images(images)
      config = self.config
      coder = self._image_coder(config.grid_bits, config.noise_bits)
      words = 2 + math.ceil(2 * config.initial_bits_per_dim() *
                            self.num_dims / 32)
      lengths = np.zeros(len(images), np.int64)
      for i, image in enumerate(images):
        rng = np.random.default_rng([*(int(s) for s in seed), i])
        stream = _TrackedCoder(rng.integers(1, 2**32, words, dtype=np.uint32))
        before = stream.num_valid_bits()
        coder.encode(stream, image[np.newaxis])
        if stream.min_bits < 32:
          raise CompressionError(
              f'image {i} drew more than the {before} primed bits; its code '
              'length would include initial bits.')
        lengths[i] = stream.num_valid_bits() - before
        if progress:
          progress(i + 1, len(images))
    return lengths

  def _header(self, images, config, num_boot, boot_codec, boot_bytes, ratio):
    return file_format.Header(
        model_fingerprint=self.fingerprint,
        image_shape=self.image_shape,
        num_levels=self.num_levels,
        num_images=len(images),
        grid_bits=config.grid_bits,
        noise_bits=config.noise_bits,
        max_batch_size=config.max_batch_size,
        bootstrap_images=num_boot,
        bootstrap_codec=boot_codec,
        bootstrap_bytes=boot_bytes,
        growth_ratio=ratio,
        threads=environment.intra_op_threads(),
        environment=environment.fingerprint(),
        pixel_digest=file_format.pixel_digest(images))

  # Decompression ------------------------------------------------------------------

  def check_header(self, header, name='input'):
    """Raises `CompressionError` if the file is not for this model."""
    if header.model_fingerprint != self.fingerprint:
      raise CompressionError(
          f'{name} was compressed with model {header.model_fingerprint.hex()}'
          f', but this model is {self.fingerprint.hex()}; decompress it with '
          'the workdir that compressed it.')
    if (tuple(header.image_shape) != self.image_shape or
        header.num_levels != self.num_levels):
      raise CompressionError(
          f'{name} holds {"x".join(map(str, header.image_shape))} images with '
          f'{header.num_levels} levels; this model codes '
          f'{"x".join(map(str, self.image_shape))} with {self.num_levels}.')

  def decompress(self, data, progress=None, name='input'):
    """Decompresses file bytes; returns ``(images, CompressionStats)``.

    Raises:
      file_format.FormatError: truncated or corrupted file.
      CompressionError: another model, or decoding did not reproduce the
        compressed pixels (different coding environment).
    """
    with environment.deterministic():
      return self._decompress(data, progress, name)

  def _decompress(self, data, progress, name):
    start = time.time()
    header, words = file_format.unpack(data, name)
    self.check_header(header, name)
    mismatch = ''
    if header.environment != environment.fingerprint():
      mismatch = (' It was compressed in another coding environment (here: '
                  f'{environment.describe()}).')
    coder = self._image_coder(header.grid_bits, header.noise_bits)
    n = header.num_images
    images = np.zeros((n,) + self.image_shape, np.int64)
    sizes = batch_schedule(n, header.bootstrap_images, header.growth_ratio,
                           header.max_batch_size)
    stream = _TrackedCoder(words)
    done = n
    coded_bits = bound_bits = 0.
    try:
      for size in reversed(sizes):
        before = stream.num_valid_bits()
        batch, k_u = coder.decode(stream, size)
        coded_bits += before - stream.num_valid_bits()
        bound_bits -= float(np.sum(coder.bound(batch, k_u))) / math.log(2.)
        images[done - size:done] = batch
        done -= size
        if progress:
          progress(n - done, n)
      num_boot = header.bootstrap_images
      boot_bits = stream.num_valid_bits()
      if header.bootstrap_codec not in (bootstrap.RAW, bootstrap.WEBP):
        raise CompressionError(f'unknown bootstrap codec '
                               f'{header.bootstrap_codec}.')
      images[:num_boot] = bootstrap.decode(stream,
                                           (num_boot,) + self.image_shape,
                                           self.num_levels,
                                           header.bootstrap_codec,
                                           header.bootstrap_bytes)
    except (bits_back.CorruptStreamError, ValueError) as e:
      raise CompressionError(f'{name} does not decode: {e}{mismatch}') from e
    if progress:
      progress(n, n)
    if not stream.coder.is_empty():
      raise CompressionError(f'{name} does not decode: data is left over '
                             f'after the last image.{mismatch}')
    images = images.astype(np.uint8)
    if file_format.pixel_digest(images) != header.pixel_digest:
      raise CompressionError(f'{name} decoded to images that do not match '
                             f'its checksum.{mismatch}')
    stats = CompressionStats(
        num_images=n,
        num_dims=self.num_dims,
        file_bytes=len(data),
        header_bytes=file_format.HEADER_SIZE,
        bootstrap_images=header.bootstrap_images,
        bootstrap_bits=float(boot_bits),
        coded_bits=coded_bits,
        bound_bits=bound_bits,
        seconds=time.time() - start)
    return images, stats
