"""Lossless image compression with a trained model (local bits-back coding).

A `DiscreteImageFlow`'s bits/dim is a code length; this package turns it
into files, following Ho, Lohn & Abbeel, "Compression with Flows via Local
Bits-Back Coding" (NeurIPS 2019): bits-back coding over the variational
dequantizer, and local bits-back coding of the continuous flow one layer at
a time. The entropy coder is `constriction`'s ANS.

Typical use::

  from tfp_flowpp import compression, training
  model, configs, _ = training.restore_for_inference(workdir)
  codec = compression.Codec(model, training.Workdir(workdir).model_config())
  data, stats = codec.compress(images)            # uint8 [N, H, W, C]
  compression.write_atomic('images.flowpp', data)
  restored, _ = codec.decompress(open('images.flowpp', 'rb').read())

Modules, by what they hold:

* `codec`: `Codec`, `CodingConfig`, `CompressionStats`, the batch schedule.
* `bits_back`: one batch — dequantizer bits-back, flow, prior.
* `flow_steps`: bijectors → coding steps; `local_bits_back`: the steps.
* `gaussian_coding`: discretized Gaussians on the ANS coder; `grid`.
* `bootstrap`: the raw-coded first images (the initial bits).
* `float64_model`: the float64 twin of a trained model.
* `environment`: determinism settings and their fingerprint.
* `file_format`: the versioned file, fingerprints, atomic writes.
* `report`: progress printing and result summaries for the tools.
"""

from tfp_flowpp.compression.codec import Codec
from tfp_flowpp.compression.codec import CodingConfig
from tfp_flowpp.compression.codec import CompressionError
from tfp_flowpp.compression.codec import CompressionStats
from tfp_flowpp.compression.file_format import FormatError
from tfp_flowpp.compression.file_format import read_header
from tfp_flowpp.compression.file_format import write_atomic
from tfp_flowpp.compression.float64_model import float64_model
from tfp_flowpp.compression.report import ProgressPrinter
from tfp_flowpp.compression.report import summary

__all__ = [
    'Codec',
    'CodingConfig',
    'CompressionError',
    'CompressionStats',
    'FormatError',
    'ProgressPrinter',
    'float64_model',
    'read_header',
    'summary',
    'write_atomic',
]
