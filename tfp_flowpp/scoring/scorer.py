"""`ImageScorer`: every per-image score of a model in one pass over the images.

Columns of `ImageScorer.score` (one value per image, in order):

* ``bpd`` — the single-sample dequantization bound in bits/dim;
* ``bpd_iw`` — the importance-weighted bound with k = ``num_samples``
  (only when k > 1);
* ``typicality`` — |b − Ĥ|, the M = 1 typicality statistic (when a
  `TypicalityTest` is given);
* ``<codec>_bits`` and ``complexity_<codec>`` — the codec's code length L(x)
  and b − L(x)/D (Serrà et al.), for each codec of the config;
* ``flowpp_bits`` and ``complexity_flowpp`` — our own code length L(x):
  the bits `tfp_flowpp.compression` spends on the image under a second,
  generic model, and b − L(x)/D (when a ``complexity_codec`` is given);
* ``background_bpd`` and ``likelihood_ratio`` — the background model's
  bound and b − b_bg (Ren et al.), when a background model is given.

``b`` is the bound the config scores with (``bpd`` or ``bpd_iw``). The OOD
scores — `score_names`: the raw b, typicality, the complexity-corrected
scores and the likelihood ratio — all read "higher = more out of
distribution". Batch ``i`` of a pass draws the noise of every bound from the
seed ``(seed, i)``, so a call gives the same numbers as `PerImageBpd` (and
``bin/evaluate``) on the same images with the same config, and a pass given a
``progress_file`` resumes after an interruption with exactly those numbers
(`PartialScores`).
"""

import numpy as np

from tfp_flowpp.scoring import complexity
from tfp_flowpp.scoring import likelihood_ratio
from tfp_flowpp.scoring import partial_scores
from tfp_flowpp.scoring import per_image
from tfp_flowpp.scoring import typicality as typicality_lib
from tfp_flowpp.scoring.config import ScoringConfig

__all__ = ['ImageScorer']


class ImageScorer:
  """Per-image bounds and OOD scores of one model (and a background)."""

  def __init__(self, model, config=None, background=None,
               complexity_codec=None):
    """Creates the scorer.

    Args:
      model: the trained `DiscreteImageFlow`.
      config: a `ScoringConfig` (default ``ScoringConfig()``).
      background: optional background `DiscreteImageFlow` for the
        likelihood ratio; it must take the model's images.
      complexity_codec: optional `tfp_flowpp.compression.Codec` of a
        generic model of the model's images; its per-image code length
        (`Codec.code_lengths`) is the L(x) of ``complexity_flowpp``. The
        model's own codec would make S only the bound's noise minus the
        coding overhead: L(x) is then the model's own code.
    """
    self.config = config or ScoringConfig()
    if not isinstance(self.config, ScoringConfig):
      raise TypeError(f'config must be a ScoringConfig, got '
                      f'{type(self.config).__name__}.')
    self.model = model
    self.background = background
    if background is not None:
      likelihood_ratio.check_background(model, background)
    self.complexity_codec = complexity_codec
    if complexity_codec is not None:
      complexity.check_codec(model, complexity_codec)
    self._model_bpd = per_image.PerImageBpd(model, self.config.batch_size,
                                            self.config.seed)
    self._background_bpd = None if background is None else (
        per_image.PerImageBpd(background, self.config.batch_size,
                              self.config.seed))
    self._key = None

  @property
  def _score_samples(self):
    return 1 if self.config.score_bound == 'single' else (
        self.config.num_samples)

  @property
  def _complexity_codecs(self):
    """Codec names of the ``complexity_<codec>`` columns, in order."""
    return self.config.codecs + ((complexity.MODEL_CODEC,) if
                                 self.complexity_codec is not None else ())

  def score_names(self, typicality=None):
    """Names of the OOD score columns `score` returns, in table order."""
    names = [self.config.score_column]
    if typicality is not None:
      names.append('typicality')
    names += [f'complexity_{codec}' for codec in self._complexity_codecs]
    if self.background is not None:
      names.append('likelihood_ratio')
    return tuple(names)

  def score_bpd(self, images, callback=None, progress_file=None):
    """The bound the scores use (b), alone: for reference sets.

    ``progress_file`` makes the pass resumable, as in `score`.
    """
    return self._score_bpd(images, callback, progress_file, True)

  def _score_bpd(self, images, callback, progress_file, remove):
    k = self._score_samples
    return self._pass(
        images, lambda batch, index: {
            'bpd': self._model_bpd.batch(batch, index, k)},
        callback, progress_file, remove)['bpd']

  def fit_typicality(self, reference_images, bootstrap_images,
                     num_bootstrap=10_000, callback=None,
                     progress_files=(None, None)):
    """A `TypicalityTest` from the model's b on in-distribution images.

    Args:
      reference_images: training images; Ĥ is their mean b.
      bootstrap_images: held-out in-distribution images (the validation
        split) for the bootstrap null distribution.
      num_bootstrap: K, bootstrap batches per batch size.
      callback: optional ``callback(num_images_done)`` (both sets, in turn).
      progress_files: optional `PartialScores` paths of the two passes
        (None: not resumable), as ``progress_file`` of `score`; both are
        deleted once both passes are complete.

    Returns:
      ``(test, reference_bpd, bootstrap_bpd)``.
    """
    reference = self._score_bpd(reference_images, callback,
                                progress_files[0], False)
    offset = len(reference)
    bootstrap = self._score_bpd(
        bootstrap_images,
        None if callback is None else (lambda done: callback(offset + done)),
        progress_files[1], False)
    for path in progress_files:
      if path is not None:
        partial_scores.PartialScores(path, self.key).remove()
    test = typicality_lib.TypicalityTest.fit(
        reference, bootstrap, num_bootstrap=num_bootstrap,
        seed=self.config.seed)
    return test, reference, bootstrap

  @property
  def key(self):
    """Hex digest of everything that decides this scorer's numbers."""
    if self._key is None:
      self._key = partial_scores.scorer_key(self.config, self.model,
                                            self.background,
                                            self.complexity_codec)
    return self._key

  def _batch_columns(self, batch, index):
    """The raw columns of one batch (before the derived scores)."""
    config = self.config
    values = {'bpd': self._model_bpd.batch(batch, index, 1)}
    if config.num_samples > 1:
      values['bpd_iw'] = self._model_bpd.batch(batch, index,
                                               config.num_samples)
    for codec in config.codecs:
      values[f'{codec}_bits'] = complexity.code_length_bits(batch, codec)
    if self.complexity_codec is not None:
      values[f'{complexity.MODEL_CODEC}_bits'] = (
          self.complexity_codec.code_lengths(batch,
                                             seed=(config.seed, index)))
    if self._background_bpd is not None:
      values['background_bpd'] = self._background_bpd.batch(
          batch, index, self._score_samples)
    return values

  def _pass(self, images, batch_columns, callback, progress_file,
            remove=True):
    """``batch_columns(batch, index)`` over every batch, optionally resumable.

    ``remove``: delete ``progress_file`` when the pass is complete.

    Returns:
      dict column name → float64 ``np.ndarray`` ``[N]``.
    """
    progress = None if progress_file is None else (
        partial_scores.PartialScores.open(progress_file, self.key))
    parts = {}
    done = index = 0
    for index, batch in enumerate(
        per_image.rebatch(images, self.config.batch_size)):
      batch = per_image.check_images(batch, self.model.image_shape,
                                     self.model.num_levels)
      if progress is not None and index < progress.num_batches:
        values = progress.batch(index, batch)
      else:
        values = batch_columns(batch, index)
        if progress is not None:
          progress.append(batch, values)
      for name, v in values.items():
        parts.setdefault(name, []).append(v)
      done += len(batch)
      if callback is not None:
        callback(done)
    if not parts:
      raise ValueError('no images to score.')
    if progress is not None:
      if index + 1 < progress.num_batches:
        raise ValueError(f'{progress.path} holds {progress.num_images} '
                         f'images\' scores but the source has only {done}; '
                         'delete it or score the same images.')
      if remove:
        progress.remove()
    return {k: np.concatenate(v).astype(np.float64) for k, v in parts.items()}

  def score(self, images, typicality=None, callback=None,
            progress_file=None):
    """Every column for every image (see the module docstring).

    Args:
      images: integer array ``[N, H, W, C]`` or an iterable of batches.
      typicality: optional `TypicalityTest` fit with this scorer's bound.
      callback: optional ``callback(num_images_done)`` after each batch.
      progress_file: optional path of a `PartialScores` file. Every finished
        batch is written to it; a pass that finds one (from an interrupted
        pass of this scorer on these images) takes its batches from it and
        scores only the rest. Deleted when the pass completes.

    Returns:
      dict column name → float64 ``np.ndarray`` ``[N]``.

    Raises:
      ValueError: no images, images the model cannot score, or a
        ``progress_file`` of another scorer or other images.
    """
    config = self.config
    columns = self._pass(images, self._batch_columns, callback,
                         progress_file)

    b = columns[config.score_column]
    out = {'bpd': columns['bpd']}
    if 'bpd_iw' in columns:
      out['bpd_iw'] = columns['bpd_iw']
    if typicality is not None:
      out['typicality'] = typicality.per_image_scores(b)
    for codec in self._complexity_codecs:
      bits = columns[f'{codec}_bits']
      out[f'{codec}_bits'] = bits
      out[f'complexity_{codec}'] = complexity.complexity_corrected_bpd(
          b, bits, self.model.num_dims)
    if 'background_bpd' in columns:
      out['background_bpd'] = columns['background_bpd']
      out['likelihood_ratio'] = likelihood_ratio.likelihood_ratio_score(
          b, columns['background_bpd'])
    return out
