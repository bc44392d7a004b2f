"""Human-readable progress and results of (de)compression (for the tools)."""

import sys
import time

__all__ = ['ProgressPrinter', 'summary']


class ProgressPrinter:
  """A ``progress(done, total)`` callback printing images/s every 2 s."""

  def __init__(self, verb, stream=sys.stdout, interval=2.):
    self.verb = verb
    self.stream = stream
    self.interval = float(interval)
    self.start = time.time()
    self.last = -float('inf')

  def __call__(self, done, total):
    now = time.time()
    if now - self.last < self.interval and done < total:
      return
    self.last = now
    rate = done / max(now - self.start, 1e-9)
    print(f'  {self.verb} {done}/{total} images ({rate:.1f} img/s)',
          file=self.stream, flush=True)


def summary(stats, what='compression'):
  """Lines comparing the file's bits/dim with the model's bound."""
  n, dims = stats.num_images, stats.num_dims
  lines = [
      f'  actual        {stats.bits_per_dim:.4f} bits/dim  (file: '
      f'{stats.file_bytes:,} bytes × 8 / ({n} images × {dims} dims))'
  ]
  if stats.coded_images:
    lines += [
        f'  model bound   {stats.bound_bits_per_dim():.4f} bits/dim  '
        '(single-sample dequantization bound at the coded noise, the '
        f'{stats.coded_images} bits-back images)',
        f'  bits-back     {stats.coded_bits_per_dim():.4f} bits/dim  (what '
        'those images take in the file)',
    ]
  lines.append(
      f'  overheads     {stats.header_bytes}-byte header; initial bits: the '
      f'first {stats.bootstrap_images} images coded without bits-back, '
      f'{stats.bootstrap_bits:,.0f} bits '
      f'({stats.bootstrap_bits / (n * dims):.4f} bits/dim of this file)')
  lines.append(f'  {what} {stats.seconds:.1f} s '
               f'({stats.images_per_second:.1f} img/s)')
  return '\n'.join(lines)
