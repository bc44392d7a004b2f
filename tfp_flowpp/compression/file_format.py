"""The compressed file: a versioned binary header and the ANS words.

Layout (all integers little-endian)::

    offset  size  field
    0       8     magic b'\x89FLOWPP\n' (the high byte and newline catch
                  text-mode transfers, as PNG's magic does)
    8       1     format version (`FORMAT_VERSION`)
    9       1     flags (bit 0: images carry a label channel — reserved for
                  conditional models, must be 0 in version 2)
    10      8     model fingerprint (`model_fingerprint`)
    18      6     image height, width, channels (uint16 each)
    24      2     levels per pixel L
    26      4     number of images N
    30      1     grid bits (bin width 2^-grid_bits)
    31      1     noise bits (local bits-back noise 2^-noise_bits)
    32      2     largest batch
    34      4     bootstrap images (coded without bits-back first, see
                  `bootstrap`)
    38      1     bootstrap codec (0: raw uniform, 1: WebP lossless)
    39      4     bootstrap WebP bytes (0 for raw)
    43      2     batch-growth ratio × 2^15
    45      2     number of label classes (reserved, 0)
    47      1     intra-op threads of the compressor
    48      4     coding-environment fingerprint (`environment.fingerprint`)
    52      4     CRC-32 of the N·H·W·C decoded pixels (uint8, in order)
    56      4     number of 32-bit payload words
    60      4     CRC-32 of bytes 0..59 and of the payload
    64      …     payload: the `constriction` ANS coder's words

The header is kept small because it is part of every file's size (64 bytes
is 0.02 bits/dim on 360 8×8 images). Parsing checks the magic, version, header CRC, the payload length against
the file size and the payload CRC, so a truncated or corrupted file fails
with a one-line `FormatError` before anything is decoded. `write_atomic`
writes any output through a temporary file and a rename.
"""

import dataclasses
import hashlib
import json
import struct
import zlib

import numpy as np

from tfp_flowpp.training import atomic_files

__all__ = [
    'FORMAT_VERSION', 'MAGIC', 'FormatError', 'Header', 'model_fingerprint',
    'pixel_digest', 'pack', 'unpack', 'read_header', 'write_atomic'
]

MAGIC = b'\x89FLOWPP\n'
FORMAT_VERSION = 2
_FIELDS = struct.Struct('<8sBB8s3HHIBBHIBIHHB4s4sI')
_CRC = struct.Struct('<I')
HEADER_SIZE = _FIELDS.size + _CRC.size
RATIO_ONE = 1 << 15
FLAG_LABELS = 1


class FormatError(ValueError):
  """A file that is not a valid compressed file (one-line message)."""


@dataclasses.dataclass(frozen=True)
class Header:
  """Everything the decoder needs besides the model and the payload."""

  model_fingerprint: bytes
  image_shape: tuple
  num_levels: int
  num_images: int
  grid_bits: int
  noise_bits: int
  max_batch_size: int
  bootstrap_images: int
  bootstrap_codec: int
  bootstrap_bytes: int
  growth_ratio: int  # × 2^-15
  threads: int
  environment: bytes
  pixel_digest: bytes
  flags: int = 0
  num_classes: int = 0
  version: int = FORMAT_VERSION


def model_fingerprint(model, model_config):
  """8-byte SHA-256 prefix of the config and every variable's value."""
  digest = hashlib.sha256(b'tfp_flowpp model fingerprint v1\n')
  config = json.loads(model_config.to_json())
  # Neither the training dtype nor the networks' precision is part of the
  # model: coding always runs the float64 twin with float64 networks (as
  # 'float32', the policy of networks in the model dtype, which every config
  # stored before precisions existed implies).
  config.pop('dtype', None)
  config.pop('attention_kernel', None)  # How, not what, the networks compute.
  config['precision'] = 'float32'
  digest.update(json.dumps(config, sort_keys=True).encode())
  for variable in model.variables:
    value = np.ascontiguousarray(variable.numpy())
    digest.update(
        f'\n{variable.name} {value.dtype.str} {value.shape}\n'.encode())
    digest.update(value.tobytes())
  return digest.digest()[:8]


def pixel_digest(images):
  """CRC-32 (4 bytes) of uint8 images in C order."""
  data = np.ascontiguousarray(images, dtype=np.uint8).tobytes()
  return _CRC.pack(zlib.crc32(data))


def pack(header, words):
  """Header + payload bytes of a compressed file."""
  words = np.ascontiguousarray(words, dtype='<u4')
  payload = words.tobytes()
  h, w, c = header.image_shape
  fields = _FIELDS.pack(MAGIC, header.version, header.flags,
                        header.model_fingerprint, h, w, c, header.num_levels,
                        header.num_images, header.grid_bits, header.noise_bits,
                        header.max_batch_size, header.bootstrap_images,
                        header.bootstrap_codec, header.bootstrap_bytes,
                        header.growth_ratio, header.num_classes,
                        header.threads, header.environment,
                        header.pixel_digest, words.size)
  crc = zlib.crc32(payload, zlib.crc32(fields))
  return fields + _CRC.pack(crc) + payload


def read_header(data, name='input'):
  """Parses the header of ``data`` (bytes; the payload may be absent)."""
  header, _ = _parse_header(data, name)
  return header


def _parse_header(data, name):
  if len(data) < len(MAGIC) or data[:len(MAGIC)] != MAGIC:
    raise FormatError(f'{name} is not a tfp_flowpp compressed file (wrong '
                      'magic number).')
  if len(data) < HEADER_SIZE:
    raise FormatError(f'{name} is truncated: {len(data)} bytes, shorter than '
                      f'the {HEADER_SIZE}-byte header.')
  fields = _FIELDS.unpack_from(data)
  (_, version, flags, fingerprint, h, w, c, levels, count, grid_bits,
   noise_bits, max_batch, bootstrap, boot_codec, boot_bytes, ratio, classes,
   threads, environment, digest, num_words) = fields
  if version != FORMAT_VERSION:
    raise FormatError(f'{name} has format version {version}; this '
                      f'tfp_flowpp reads version {FORMAT_VERSION}.')
  header = Header(
      model_fingerprint=fingerprint,
      image_shape=(h, w, c),
      num_levels=levels,
      num_images=count,
      grid_bits=grid_bits,
      noise_bits=noise_bits,
      max_batch_size=max_batch,
      bootstrap_images=bootstrap,
      bootstrap_codec=boot_codec,
      bootstrap_bytes=boot_bytes,
      growth_ratio=ratio,
      threads=threads,
      environment=environment,
      pixel_digest=digest,
      flags=flags,
      num_classes=classes,
      version=version)
  return header, num_words


def unpack(data, name='input'):
  """``(Header, uint32 words)`` of a compressed file, fully checked."""
  header, num_words = _parse_header(data, name)
  expected = HEADER_SIZE + 4 * num_words
  if len(data) < expected:
    raise FormatError(f'{name} is truncated: {len(data)} of {expected} '
                      'bytes.')
  if len(data) > expected:
    raise FormatError(f'{name} has {len(data) - expected} bytes of trailing '
                      'data after the payload.')
  payload = data[HEADER_SIZE:]
  (crc,) = _CRC.unpack_from(data, _FIELDS.size)
  if crc != zlib.crc32(payload, zlib.crc32(data[:_FIELDS.size])):
    raise FormatError(f'{name} is corrupted: its checksum does not match.')
  if (header.flags & FLAG_LABELS or header.num_classes or
      header.flags & ~FLAG_LABELS):
    raise FormatError(f'{name} holds class labels or other features of a '
                      'newer tfp_flowpp (flags '
                      f'{header.flags:#x}); this version cannot decode it.')
  return header, np.frombuffer(payload, dtype='<u4').astype(np.uint32)


def write_atomic(path, payload):
  """Writes bytes to ``path`` through a temporary file and `os.replace`.

  The project's one atomic writer (`training.atomic_files`): a reader sees
  the old file or the complete new one, never a half-written file.
  """
  atomic_files.atomic_write_bytes(path, payload)
