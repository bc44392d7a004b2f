"""Console progress: a redrawn bar on a terminal, plain lines in logs."""

import sys
import time

__all__ = ['ProgressBar', 'format_duration']


def format_duration(seconds):
  seconds = int(max(seconds, 0))
  hours, rest = divmod(seconds, 3600)
  minutes, secs = divmod(rest, 60)
  return f'{hours}:{minutes:02d}:{secs:02d}' if hours else f'{minutes}:{secs:02d}'


class ProgressBar:
  """``step 120/1500 [====>     ] 8% bpd 2.310 1,024 img/s eta 1:20``.

  ``unit`` names what is counted (``'step'``; ``'images'`` for scoring).
  """

  def __init__(self, total, start=0, stream=None, width=24, unit='step'):
    self.total = int(total)
    self.unit = unit
    self.start_step = int(start)
    self.stream = stream or sys.stdout
    self.width = width
    self.interactive = bool(getattr(self.stream, 'isatty', lambda: False)())
    self.started = time.time()
    self._open_line = False

  def restart(self, step):
    """Measures the ETA from now on, with ``step`` steps already done."""
    self.start_step = int(step)
    self.started = time.time()

  def update(self, step, **values):
    """Redraws (terminal) or prints one line (logs) for ``step``."""
    fraction = min(step / max(self.total, 1), 1.)
    filled = int(round(self.width * fraction))
    bar = '=' * max(filled - 1, 0) + ('>' if filled else '') + '.' * (
        self.width - filled)
    done = step - self.start_step
    elapsed = time.time() - self.started
    eta = elapsed / done * (self.total - step) if done > 0 else 0.
    parts = [f'{self.unit} {step}/{self.total} [{bar}] {fraction:4.0%}']
    for name, value in values.items():
      if value is None:
        continue
      if name == 'img/s':
        parts.append(f'{value:,.0f} img/s')
      elif isinstance(value, float):
        parts.append(f'{name} {value:.4f}')
      else:
        parts.append(f'{name} {value}')
    parts.append(f'eta {format_duration(eta)}')
    line = '  '.join(parts)
    if self.interactive:
      self.stream.write('\r' + line + '\x1b[K')
      self._open_line = True
    else:
      self.stream.write(line + '\n')
    self.stream.flush()

  def message(self, text):
    """Prints a full line without breaking the bar."""
    if self._open_line:
      self.stream.write('\n')
      self._open_line = False
    self.stream.write(text + '\n')
    self.stream.flush()

  def close(self):
    if self._open_line:
      self.stream.write('\n')
      self._open_line = False
    self.stream.flush()
