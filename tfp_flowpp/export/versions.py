"""Version directories of a TF Serving model base path (no TensorFlow here).

TF Serving's model server watches ``--model_base_path`` and serves the
subdirectories whose names are integers (by default the largest). So a model
base path looks like::

    EXPORT_DIR/1/saved_model.pb ...
    EXPORT_DIR/2/saved_model.pb ...

Anything else in it (for instance the hidden ``.tmp-…`` directory an export
is written into before it is renamed to its version number) is ignored by the
server. These helpers pick and check version numbers; they never write.
"""

import os
import re

__all__ = ['ExportError', 'existing_versions', 'next_version',
           'resolve_version', 'version_path']

_VERSION_RE = re.compile(r'[0-9]+')


class ExportError(ValueError):
  """An export that cannot be done as asked (one-line message)."""


def existing_versions(export_dir):
  """Sorted integer versions present in ``export_dir`` (``[]`` if missing)."""
  try:
    names = os.listdir(export_dir)
  except FileNotFoundError:
    return []
  except NotADirectoryError as e:
    raise ExportError(f'Export directory {export_dir} is not a directory.') from e
  return sorted(int(n) for n in names
                if _VERSION_RE.fullmatch(n) and
                os.path.isdir(os.path.join(export_dir, n)))


def next_version(export_dir):
  """One more than the largest existing version, or 1."""
  versions = existing_versions(export_dir)
  return versions[-1] + 1 if versions else 1


def version_path(export_dir, version):
  return os.path.join(export_dir, str(version))


def resolve_version(export_dir, version=None):
  """Validates ``version`` (default: the next free one) for ``export_dir``.

  Returns:
    The integer version.

  Raises:
    ExportError: a bad version number, or one that already exists (an
      existing version is never overwritten: a server may be serving it).
  """
  if os.path.exists(export_dir) and not os.path.isdir(export_dir):
    raise ExportError(f'Export directory {export_dir} is not a directory.')
  if version is None:
    return next_version(export_dir)
  if isinstance(version, bool) or not isinstance(version, int):
    raise ExportError(f'version must be a positive integer, got {version!r}.')
  if version < 1:
    raise ExportError(f'version must be a positive integer, got {version}.')
  path = version_path(export_dir, version)
  if os.path.lexists(path):
    raise ExportError(
        f'{path} already exists; versions are never overwritten (a model '
        f'server may be serving it). Use --version={next_version(export_dir)} '
        'or omit --version for the next free one.')
  return version
