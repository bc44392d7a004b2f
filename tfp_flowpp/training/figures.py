"""PNG figures written by training, evaluation and the bin/ tools.

All writers are atomic (`atomic_files`: temporary file + rename), so an
interrupted run never leaves a truncated image behind.
"""

import io
import math

import numpy as np
from PIL import Image

from tfp_flowpp.training import atomic_files

__all__ = ['image_grid', 'save_png', 'save_image_grid', 'plot_bpd_curves']


def to_uint8(images, num_levels):
  """Maps integer levels [0, L) to uint8 [0, 255] (L ≤ 256 stays exact)."""
  images = np.asarray(images)
  if num_levels == 256:
    return images.astype(np.uint8)
  scaled = np.round(images.astype(np.float64) * 255. / (num_levels - 1))
  return np.clip(scaled, 0, 255).astype(np.uint8)


def image_grid(images, num_levels, columns=None, padding=1):
  """Tiles ``[N, H, W, C]`` integer images into one uint8 ``[H', W', C']``."""
  images = to_uint8(images, num_levels)
  if images.ndim != 4:
    raise ValueError(f'Expected [N, H, W, C] images, got {images.shape}.')
  n, h, w, c = images.shape
  columns = columns or int(math.ceil(math.sqrt(n)))
  rows = int(math.ceil(n / columns))
  grid = np.full(
      (rows * (h + padding) + padding, columns * (w + padding) + padding, c),
      255, np.uint8)
  for i, image in enumerate(images):
    r, col = divmod(i, columns)
    top, left = padding + r * (h + padding), padding + col * (w + padding)
    grid[top:top + h, left:left + w] = image
  return grid


def save_png(array, path, scale=1):
  """Saves a uint8 ``[H, W, C]`` array (C = 1 or 3) as PNG, atomically."""
  array = np.asarray(array, np.uint8)
  if array.shape[-1] == 1:
    array = array[..., 0]
  image = Image.fromarray(array)
  if scale > 1:
    image = image.resize((image.width * scale, image.height * scale),
                         Image.NEAREST)
  buffer = io.BytesIO()
  image.save(buffer, format='PNG')
  atomic_files.atomic_write_bytes(path, buffer.getvalue())


def save_image_grid(images, path, num_levels, columns=None, min_size=256):
  """Image grid PNG, upscaled (nearest) so small images stay visible."""
  grid = image_grid(images, num_levels, columns=columns)
  scale = max(1, int(math.ceil(min_size / max(grid.shape[:2]))))
  save_png(grid, path, scale=scale)
  return grid


def plot_bpd_curves(curves,
                    path,
                    title='bits/dim',
                    baselines=None,
                    x_label='step'):
  """Line plot of named bpd curves, atomically saved as PNG.

  Args:
    curves: dict name -> (xs, ys).
    path: output PNG.
    title: plot title.
    baselines: optional dict name -> horizontal line value.
    x_label: label of the x axis.
  """
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top

  fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
  for name, (xs, ys) in curves.items():
    if len(xs):
      ax.plot(xs, ys, marker='o', markersize=3, label=name)
  for name, value in (baselines or {}).items():
    ax.axhline(value, linestyle='--', color='gray', linewidth=1)
    ax.annotate(
        f'{name} {value:.2f}', (0.01, value),
        xycoords=('axes fraction', 'data'),
        fontsize=8,
        color='gray',
        va='bottom')
  ax.set_xlabel(x_label)
  ax.set_ylabel('bits/dim')
  ax.set_title(title)
  ax.grid(alpha=0.3)
  ax.legend()
  buffer = io.BytesIO()
  fig.tight_layout()
  fig.savefig(buffer, format='png')
  plt.close(fig)
  atomic_files.atomic_write_bytes(path, buffer.getvalue())
