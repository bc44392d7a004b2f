"""Writing a file atomically: a temporary file in the same folder + rename.

A reader (or a run killed mid-write) sees either the old file or the complete
new one, never a truncated file.
"""

import os
import tempfile

__all__ = ['atomic_write_bytes']


def atomic_write_bytes(path, payload):
  """Writes ``payload`` to ``path`` via a temporary file in the same folder.

  Args:
    path: Destination file; its folder is created if missing.
    payload: `bytes` to write.

  The temporary file is fsynced before `os.replace`, and removed if anything
  fails (including KeyboardInterrupt).
  """
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=folder, prefix='.tmp-')
  try:
    with os.fdopen(fd, 'wb') as f:
      f.write(payload)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
