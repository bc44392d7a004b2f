"""Flow specification strings: the grammar of ``ModelConfig.flow``.

A spec is whitespace- or comma-separated tokens applied in the data → latent
direction,

* ``SPLIT:N`` — split into the paired layout (``SPLIT`` is a key of
  `bijectors.SPLITS`: ``stripe``, alternate columns, the official Flow++
  "checkerboard"; ``checkerboard``, true (i+j) parity; ``channel``, channel
  halves), then ``N`` flow steps ``[norm → 1×1 conv → coupling → swap
  halves]``, then merge back;
* ``squeeze`` — space-to-depth; everything after it runs at the lower
  resolution and is un-squeezed at the end, so latents keep the image shape;
* ``factor_out`` — half of the channels leave the flow (multi-scale
  architecture); everything after it transforms the kept half only.

Examples: Flow++ CIFAR-10 ``'stripe:4 squeeze channel:2 stripe:3'``;
Glow ``'squeeze channel:32 factor_out squeeze channel:32 factor_out squeeze
channel:32'``.
"""

import dataclasses
import re

from tfp_flowpp.bijectors import splits

__all__ = ['FlowToken', 'parse_flow']


@dataclasses.dataclass(frozen=True)
class FlowToken:
  """One parsed flow-spec token: ``kind`` in {split, squeeze, factor_out}."""
  kind: str
  split: str = ''
  steps: int = 0


def parse_flow(spec):
  """Parses a flow specification string into `FlowToken`s.

  Raises:
    ValueError: with a one-line message naming the bad token.
  """
  tokens = []
  for raw in re.split(r'[\s,]+', spec.strip()):
    if not raw:
      continue
    if raw in ('squeeze', 'factor_out'):
      tokens.append(FlowToken(raw))
      continue
    match = re.fullmatch(r'([a-z]+):(\d+)', raw)
    if (not match or match.group(1) not in splits.SPLITS or
        int(match.group(2)) < 1):
      raise ValueError(
          f'Bad flow token {raw!r} in {spec!r}: expected SPLIT:N with SPLIT in '
          f'{tuple(splits.SPLITS)} and N >= 1, "squeeze" or "factor_out".')
    tokens.append(FlowToken('split', match.group(1), int(match.group(2))))
  if not any(t.kind == 'split' for t in tokens):
    raise ValueError(f'Flow spec {spec!r} has no coupling steps.')
  return tokens
