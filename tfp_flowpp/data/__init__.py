"""Image data for density models: sources, deterministic splits, batches.

Typical use::

  from tfp_flowpp import data
  ds = data.load_dataset(data.DataConfig(dataset='digits'))
  for batch in ds.train_batches(64, start_step=step).take(n):  # uint8
    ...
  baseline = data.per_pixel_histogram_bpd(ds.arrays('train'),
                                          ds.arrays('test'), ds.num_levels)

Modules, by what they hold:

* `config`: `DataConfig` (fields carry help texts for flags), `DATASETS`
  (the ``dataset`` string forms).
* `loader`: `load_dataset`.
* `pipeline`: `ImageDataset` (splits, resumable train batches, eval).
* `digits`, `idx`, `image_folder`, `npz`, `tfds_source`: one per source.
* `transforms`: class filter, center crop + resize, bit reduction.
* `splits`: seeded split and per-epoch permutations.
* `histogram_baseline`: `per_pixel_histogram_bpd`.
* `errors`: `DataError`.
"""

from tfp_flowpp.data.config import DATASETS
from tfp_flowpp.data.config import DataConfig
from tfp_flowpp.data.config import config_fields
from tfp_flowpp.data.errors import DataError
from tfp_flowpp.data.histogram_baseline import per_pixel_histogram_bpd
from tfp_flowpp.data.loader import load_dataset
from tfp_flowpp.data.pipeline import ImageDataset
from tfp_flowpp.data.pipeline import SPLITS

__all__ = [
    'DATASETS',
    'DataConfig',
    'DataError',
    'ImageDataset',
    'SPLITS',
    'config_fields',
    'load_dataset',
    'per_pixel_histogram_bpd',
]
