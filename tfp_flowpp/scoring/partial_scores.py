"""`PartialScores`: a scoring pass's finished batches, kept so it resumes.

An importance-weighted evaluation is long: k = 64 on Fashion-MNIST's
10,000 test images takes about three hours on two CPU cores, and the
paper's k = 4,096 is 64 times that. `ImageScorer.score` can keep every
finished batch in a file (``progress_file``): each batch's raw columns and
a CRC-32 of its pixels, rewritten atomically after every batch, so a pass
killed at any point — Ctrl-C, SIGKILL, a lost machine — restarts from the
first unfinished batch. Batch ``i`` draws its noise from the seed
``(seed, i)`` whichever process runs it, so a resumed pass gives exactly the
numbers of an uninterrupted one.

The file is bound to what produced it: a key over the scoring config, the
model's (and background model's) dtype, precision, attention kernel and
every variable's value, and the complexity codec's fingerprint. A different key, or a stored
batch whose pixels differ from the source's, is a one-line error; nothing is
mixed. The scorer deletes the file when the pass completes.
"""

import hashlib
import json
import os
import zlib

import numpy as np

__all__ = ['PartialScores', 'scorer_key']

_FORMAT = 'tfp_flowpp partial scores v1'


def _model_digest(digest, model):
  from tfp_flowpp import precision  # pylint: disable=g-import-not-at-top
  from tfp_flowpp.networks import blocks  # pylint: disable=g-import-not-at-top
  fields = {
      'class': type(model).__name__,
      'dtype': str(getattr(model.dtype, 'name', model.dtype)),
      'precision': precision.policy_of(model),
      'image_shape': [int(d) for d in model.image_shape],
      'num_levels': int(model.num_levels),
  }
  attention = blocks.attention_kernel_of(model)
  if attention:  # The kernels agree to rounding only.
    fields['attention'] = list(attention)
  digest.update(json.dumps(fields, sort_keys=True).encode())
  for variable in model.variables:  # In tf.Module's (attribute) order.
    value = np.ascontiguousarray(variable.numpy())
    digest.update(f'\n{value.dtype.str} {value.shape}\n'.encode())
    digest.update(value.tobytes())


def scorer_key(config, model, background=None, complexity_codec=None):
  """Hex SHA-256 of everything that decides a scorer's numbers.

  Args:
    config: the `ScoringConfig`.
    model: the scored model.
    background: the background model, or None.
    complexity_codec: the generic model's `compression.Codec`, or None.
  """
  import dataclasses  # pylint: disable=g-import-not-at-top
  digest = hashlib.sha256(f'{_FORMAT}\n'.encode())
  digest.update(json.dumps(dataclasses.asdict(config), sort_keys=True,
                           default=str).encode())
  for what, m in (('model', model), ('background', background)):
    digest.update(f'\n[{what}]\n'.encode())
    if m is not None:
      _model_digest(digest, m)
  digest.update(b'\n[complexity]\n')
  if complexity_codec is not None:
    digest.update(bytes(complexity_codec.fingerprint))
  return digest.hexdigest()


def pixel_crc(images):
  """CRC-32 of a uint8 batch in C order (what a stored batch is checked by)."""
  return zlib.crc32(np.ascontiguousarray(images, np.uint8).tobytes())


class PartialScores:
  """The finished batches of one scoring pass, mirrored in a file.

  #### Examples

  A pass of two batches, interrupted after the first and resumed:

  >>> import os, tempfile
  >>> import numpy as np
  >>> from tfp_flowpp.scoring import PartialScores
  >>> path = os.path.join(tempfile.mkdtemp(), 'pass.partial.npz')
  >>> batches = [np.full([2, 4, 4, 1], i, np.uint8) for i in range(2)]
  >>> def compute(batch):  # Stands in for the model's bounds.
  ...   return {'bpd': batch.mean(axis=(1, 2, 3)) + 1.}
  >>> progress = PartialScores.open(path, key='scorer-digest')
  >>> progress.append(batches[0], compute(batches[0]))  # Then: Ctrl-C.
  >>> progress = PartialScores.open(path, key='scorer-digest')
  >>> progress.num_batches, progress.num_images
  (1, 2)
  >>> columns = [progress.batch(0, batches[0])]  # Checked by its CRC-32.
  >>> columns.append(compute(batches[1]))
  >>> progress.append(batches[1], columns[-1])
  >>> progress.remove()  # The pass is complete.
  >>> np.concatenate([c['bpd'] for c in columns])
  array([1., 1., 2., 2.])
  >>> PartialScores.open(path, key='scorer-digest').num_batches  # A new pass.
  0
  """

  def __init__(self, path, key, crcs=(), sizes=(), columns=None):
    self.path = os.fspath(path)
    self.key = key
    self._crcs = [int(c) for c in crcs]
    self._sizes = [int(s) for s in sizes]
    self._columns = {name: list(np.split(np.asarray(values, np.float64),
                                         np.cumsum(self._sizes)[:-1]))
                     if self._sizes else []
                     for name, values in (columns or {}).items()}

  @classmethod
  def open(cls, path, key):
    """The pass stored at ``path`` (checked against ``key``), or a new one.

    Raises:
      ValueError: the file is not a partial-scores file, or holds another
        model's or configuration's scores (one line; delete it to restart).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
      return cls(path, key)
    try:
      with np.load(path, allow_pickle=False) as data:
        stored = {name: data[name] for name in data.files}
      header = json.loads(str(stored.pop('header')))
      crcs, sizes = stored.pop('crcs'), stored.pop('sizes')
      stored = {name[len('column_'):]: v for name, v in stored.items()
                if name.startswith('column_')}
    except (OSError, ValueError, KeyError, zlib.error) as e:
      raise ValueError(f'{path} is not a partial-scores file ({e}); delete '
                       'it to start the pass over.') from None
    if header.get('format') != _FORMAT:
      raise ValueError(f'{path} is not a partial-scores file; delete it to '
                       'start the pass over.')
    if header.get('key') != key:
      raise ValueError(f'{path} holds partial scores of another model or '
                       'scoring configuration (weights, precision, attention '
                       'kernel, k, seed, batch size, codecs or background '
                       'differ); delete it '
                       'or score with the settings that wrote it.')
    if any(len(v) != int(np.sum(sizes)) for v in stored.values()):
      raise ValueError(f'{path} is truncated; delete it to start the pass '
                       'over.')
    return cls(path, key, crcs, sizes, stored)

  @property
  def num_batches(self):
    """Batches finished so far."""
    return len(self._sizes)

  @property
  def num_images(self):
    """Images finished so far."""
    return int(sum(self._sizes))

  def batch(self, index, images):
    """The stored columns of batch ``index``, after checking its pixels.

    Raises:
      ValueError: ``images`` are not the images the batch was scored on.
    """
    if len(images) != self._sizes[index] or (
        pixel_crc(images) != self._crcs[index]):
      raise ValueError(
          f'{self.path} holds scores of other images at batch {index} '
          f'(images {sum(self._sizes[:index])}..'
          f'{sum(self._sizes[:index + 1]) - 1}): the source changed since '
          'the interrupted pass; delete the file or score the same images.')
    return {name: parts[index] for name, parts in self._columns.items()}

  def append(self, images, values):
    """Adds the next batch's columns and rewrites the file atomically."""
    sizes = {len(v) for v in values.values()}
    if sizes != {len(images)} or (
        self._columns and set(values) != set(self._columns)):
      raise ValueError('every batch needs the same columns, one value per '
                       'image.')
    for name, v in values.items():
      self._columns.setdefault(name, []).append(np.asarray(v, np.float64))
    self._crcs.append(pixel_crc(images))
    self._sizes.append(len(images))
    self._save()

  def _save(self):
    directory = os.path.dirname(os.path.abspath(self.path))
    os.makedirs(directory, exist_ok=True)
    tmp = f'{self.path}.tmp-{os.getpid()}'
    arrays = {f'column_{name}': np.concatenate(parts)
              for name, parts in self._columns.items()}
    header = json.dumps({'format': _FORMAT, 'key': self.key})
    try:
      with open(tmp, 'wb') as f:
        np.savez(f, header=np.asarray(header),
                 crcs=np.asarray(self._crcs, np.int64),
                 sizes=np.asarray(self._sizes, np.int64), **arrays)
        f.flush()
        os.fsync(f.fileno())
      os.replace(tmp, self.path)
    except BaseException:  # Ctrl-C mid-write included: no stray temp file.
      if os.path.exists(tmp):
        os.remove(tmp)
      raise

  def remove(self):
    """Deletes the file (the pass is complete)."""
    try:
      os.remove(self.path)
    except FileNotFoundError:
      pass
