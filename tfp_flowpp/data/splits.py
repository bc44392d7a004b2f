"""Deterministic split and shuffle indices, all derived from the seed.

Every permutation comes from a numpy generator seeded by
``(seed, purpose tag[, epoch])``, so the same config gives the same splits
and epoch orders in every process, on every machine.
"""

import numpy as np

from tfp_flowpp.data.errors import DataError

__all__ = ['epoch_permutation', 'holdout', 'resolve_count', 'split_indices']

_TEST_TAG = 1
_VALIDATION_TAG = 2
_EPOCH_TAG = 3
_TAGS = {'test': _TEST_TAG, 'validation': _VALIDATION_TAG}


def resolve_count(size, n, what, name):
  """Turns a split size (fraction or count) into a count out of ``n``.

  A positive fraction always holds out at least one example.

  Args:
    size: Float fraction in (0, 1), or int count (0: nothing).
    n: Number of examples the split is taken from.
    what: ``'validation'`` or ``'test'``, for messages.
    name: Data set name, for messages.

  Returns:
    Int count in ``[0, n)``.

  Raises:
    DataError: the split would leave no examples behind.
  """
  if isinstance(size, float):
    count = max(1, int(round(size * n))) if n else 0
  else:
    count = int(size)
  if count and count >= n:
    raise DataError(f'{what}_size={size} holds out {count} of the {n} '
                    f'examples of {name!r}, leaving none for training; use a '
                    f'smaller {what}_size.')
  return count


def holdout(n, count, seed, what):
  """Splits ``range(n)`` into kept and held-out index arrays.

  Args:
    n: Number of examples.
    count: How many to hold out.
    seed: Config seed.
    what: ``'test'`` or ``'validation'``: each uses its own permutation.

  Returns:
    ``(kept, held)``: sorted int64 index arrays, so both splits keep the
    source order.
  """
  rng = np.random.default_rng([seed, _TAGS[what]])
  perm = rng.permutation(n)
  return np.sort(perm[count:]), np.sort(perm[:count])


def epoch_permutation(n, seed, epoch):
  """The order of the ``n`` training examples in epoch ``epoch``."""
  return np.random.default_rng([seed, _EPOCH_TAG, epoch]).permutation(n)


def split_indices(n, has_official_test, config, name):
  """Positions of the train, validation and (held-out) test examples.

  Without an official test split, ``config.test_size`` examples are held out
  of all ``n`` first; ``config.validation_size`` examples of the rest then
  form the validation split. Both use fixed permutations of the seed, and
  every returned array is sorted (source order).

  Args:
    n: Number of (class-filtered) examples in the source's train split.
    has_official_test: Whether the source has its own test split.
    config: `DataConfig` (uses test_size, validation_size, seed).
    name: Data set name, for messages.

  Returns:
    Dict with int64 index arrays under ``'train'`` and ``'validation'``,
    and ``'test'`` (None when the test split is official).
  """
  remaining = np.arange(n)
  test = None
  if not has_official_test:
    count = resolve_count(config.test_size, n, 'test', name)
    kept, test = holdout(n, count, config.seed, 'test')
    remaining = kept
  count = resolve_count(config.validation_size, len(remaining), 'validation',
                        name)
  kept, held = holdout(len(remaining), count, config.seed, 'validation')
  return {'train': remaining[kept], 'validation': remaining[held],
          'test': test}
