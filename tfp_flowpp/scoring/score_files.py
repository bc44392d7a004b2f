"""Per-image score tables as CSV or ``.npz`` files, written atomically.

A table is an ordered mapping of column name → 1-D array, one row per image.
Column types are fixed by name, so a file reads back exactly as written:
``index`` and ``label`` are int64, ``path`` is text, every other column is
float64 (CSV stores each float with Python's shortest round-trip repr, so
no digit is lost). Files are written to a temporary name in the same folder
and renamed, so an existing file is never left half-written.
"""

import csv
import io
import os

import numpy as np

from tfp_flowpp.training import atomic_files

__all__ = ['FORMATS', 'read_scores', 'write_scores']

FORMATS = ('.csv', '.npz')
_INT_COLUMNS = ('index', 'label')
_TEXT_COLUMNS = ('path',)


def _format(path):
  extension = os.path.splitext(path)[1].lower()
  if extension not in FORMATS:
    raise ValueError(f'{path}: score files must end in .csv or .npz.')
  return extension


def _typed(name, values):
  if name in _INT_COLUMNS:
    return np.asarray(values, np.int64)
  if name in _TEXT_COLUMNS:
    return np.asarray(values, np.str_)
  return np.asarray(values, np.float64)


def _columns(columns):
  columns = {str(k): _typed(str(k), v) for k, v in columns.items()}
  if not columns:
    raise ValueError('a score table needs at least one column.')
  lengths = {k: v.shape for k, v in columns.items()}
  if any(len(s) != 1 for s in lengths.values()) or len(
      {s[0] for s in lengths.values()}) != 1:
    raise ValueError(f'score columns must be 1-D and of one length, got '
                     f'{lengths}.')
  for name in columns:
    if not name or any(c in name for c in ',"\n\r'):
      raise ValueError(f'bad column name {name!r}.')
  return columns


def write_scores(path, columns):
  """Writes ``columns`` (name → 1-D array) to ``path`` (.csv or .npz)."""
  extension = _format(path)
  columns = _columns(columns)
  if extension == '.npz':
    buffer = io.BytesIO()
    np.savez(buffer, **columns)
    payload = buffer.getvalue()
  else:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator='\n')
    writer.writerow(list(columns))
    for row in zip(*columns.values()):
      writer.writerow([repr(float(v)) if isinstance(v, np.floating) else
                       str(v) for v in row])
    payload = text.getvalue().encode('utf-8')
  atomic_files.atomic_write_bytes(path, payload)


def read_scores(path):
  """Reads a table written by `write_scores`; returns name → np.ndarray."""
  extension = _format(path)
  if extension == '.npz':
    with np.load(path, allow_pickle=False) as f:
      return {k: _typed(k, f[k]) for k in f.files}
  with open(path, newline='', encoding='utf-8') as f:
    reader = csv.reader(f)
    header = next(reader, None)
    if not header:
      raise ValueError(f'{path} is empty; expected a header row.')
    rows = list(reader)
  if any(len(r) != len(header) for r in rows):
    raise ValueError(f'{path}: every row must have {len(header)} fields.')
  values = list(zip(*rows)) if rows else [()] * len(header)
  return {
      name: _typed(name, [float(v) for v in column]
                   if name not in _INT_COLUMNS + _TEXT_COLUMNS else column)
      for name, column in zip(header, values)
  }
