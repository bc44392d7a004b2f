"""Image data for density models: sources, deterministic splits, batches.

Typical use::

  from tfp_flowpp import data
  ds = data.load_dataset(data.DataConfig(dataset='digits'))
  for batch in ds.train_batches(64, start_step=step).take(n):  # uint8
    ...
  baseline = data.per_pixel_histogram_bpd(ds.arrays('train'),
                                          ds.arrays('test'), ds.num_levels)
  own = data.from_arrays(uint8_images, labels, config=data.DataConfig(
      validation_size=500))  # Your own numpy arrays, split the same way.

Modules, by what they hold:

* `config`: `DataConfig` (fields carry help texts for flags), `DATASETS`
  (the ``dataset`` string forms).
* `loader`: `load_dataset`, `from_arrays`.
* `pipeline`: `ImageDataset` (splits, resumable train batches, eval).
* `digits`, `idx`, `image_folder`, `npz`, `tfds_source`: one per source.
* `raw_data`: `RawData` (a source's arrays before splitting) and their
  checks.
* `streaming`: splits streamed from encoded records (big TFDS data);
  `stateless_shuffle`: its seed-keyed window shuffle.
* `reachability`: the fast offline probe of download hosts.
* `transforms`: class filter, center crop + resize, bit reduction.
* `splits`: seeded split and per-epoch permutations.
* `histogram_baseline`: `per_pixel_histogram_bpd`.
* `errors`: `DataError`.
"""

from tfp_flowpp.data.config import DATASETS
from tfp_flowpp.data.config import DataConfig
from tfp_flowpp.data.errors import DataError
from tfp_flowpp.data.histogram_baseline import per_pixel_histogram_bpd
from tfp_flowpp.data.loader import from_arrays
from tfp_flowpp.data.loader import load_dataset
from tfp_flowpp.data.pipeline import ImageDataset
from tfp_flowpp.data.pipeline import SPLITS

__all__ = [
    'DATASETS',
    'DataConfig',
    'DataError',
    'ImageDataset',
    'SPLITS',
    'from_arrays',
    'load_dataset',
    'per_pixel_histogram_bpd',
]
