"""Testing utilities (like `tf.test` or TFP's ``test_util``): not model code.

Used by the test suite and the benchmarks; no package ``__init__`` exports
this module, so import it explicitly::

    from tfp_flowpp import testing

    with testing.counting_network_calls(model.bijector) as (couplings, calls):
      model.log_prob(images)
    assert len(calls) == len(couplings[0])
"""

import contextlib

import tensorflow as tf

from tfp_flowpp.bijectors import coupling

__all__ = ['counting_network_calls']


class _CountingNetwork(tf.Module):
  """A coupling network that appends to ``calls`` each time it is called."""

  def __init__(self, network, calls):
    super().__init__(name='counting_network')
    self.network = network
    self.calls = calls

  def __call__(self, x, context=None, training=False):
    self.calls.append(1)
    return self.network(x, context=context, training=training)


@contextlib.contextmanager
def counting_network_calls(*modules):
  """Counts coupling-network evaluations of the couplings in ``modules``.

  Yields ``(couplings, calls)``: for each module, the list of its
  `CouplingBijector`s (the module itself or its submodules), and a list that
  gets one entry per network call made inside the block — per Python call,
  i.e. per trace when the calls happen inside a `tf.function`, which is the
  number of network evaluations in the traced graph. The networks are
  restored on exit.
  """
  calls = []
  couplings = [[
      m for m in (module,) + tuple(module.submodules)
      if isinstance(m, coupling.CouplingBijector)
  ] for module in modules]
  originals = [(c, c._network) for group in couplings for c in group]  # pylint: disable=protected-access
  try:
    for c, network in originals:
      c._network = _CountingNetwork(network, calls)  # pylint: disable=protected-access
    yield couplings, calls
  finally:
    for c, network in reversed(originals):
      c._network = network  # pylint: disable=protected-access
