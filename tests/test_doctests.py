"""The docstring examples run, and `help()` shows math, examples, references.

Every module under tfp_flowpp/ with ``>>>`` examples is one test case: its
examples run with `doctest` (ELLIPSIS | NORMALIZE_WHITESPACE) in an empty
namespace, so each example imports what it needs. Every public class of the
bijector, distribution and network packages (each module's ``__all__``, so
the rule holds for classes added later) must carry, in its own class
docstring, which `help()` renders first, the math (a ``none`` code block),
an ``#### Examples`` section with a runnable example and a
``#### References`` section with an arXiv link.
"""

import doctest
import importlib
import inspect
import pkgutil
import pydoc
import re

import pytest

import tfp_flowpp

_OPTIONFLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
_DOCUMENTED_PACKAGES = ('tfp_flowpp.bijectors', 'tfp_flowpp.distributions',
                        'tfp_flowpp.networks')

# The classes and math-carrying functions issue 10 names; discovery through
# `__all__` must find at least these.
_REQUIRED_CLASSES = {
    'tfp_flowpp.bijectors.actnorm.ActNorm',
    'tfp_flowpp.bijectors.additive_coupling.AdditiveCoupling',
    'tfp_flowpp.bijectors.affine_coupling.AffineCoupling',
    'tfp_flowpp.bijectors.coupling.CouplingBijector',
    'tfp_flowpp.bijectors.factor_out.FactorOut',
    'tfp_flowpp.bijectors.fused_log_det.FusedLogDetBijector',
    'tfp_flowpp.bijectors.invertible_conv1x1.InvertibleConv1x1',
    'tfp_flowpp.bijectors.logit_preprocess.LogitPreprocess',
    'tfp_flowpp.bijectors.mix_logistic_coupling.MixLogisticCoupling',
    'tfp_flowpp.bijectors.rearrangement.Rearrangement',
    'tfp_flowpp.bijectors.splits.ChannelSplit',
    'tfp_flowpp.bijectors.splits.CheckerboardSplit',
    'tfp_flowpp.bijectors.splits.StripeSplit',
    'tfp_flowpp.bijectors.squeeze.Squeeze',
    'tfp_flowpp.distributions.dequantization.UniformDequantizer',
    'tfp_flowpp.distributions.dequantization.VariationalDequantizer',
    'tfp_flowpp.distributions.discrete_image_flow.DiscreteImageFlow',
    'tfp_flowpp.networks.blocks.GatedAttentionBlock',
    'tfp_flowpp.networks.blocks.GatedConvBlock',
    'tfp_flowpp.networks.blocks.PointwiseMaxoutBlock',
    'tfp_flowpp.networks.coupling_networks.FlowppCouplingNetwork',
    'tfp_flowpp.networks.coupling_networks.GlowCouplingNetwork',
    'tfp_flowpp.networks.coupling_networks.ZeroConvNetwork',
    'tfp_flowpp.networks.gated_resnet.GatedResNet',
    'tfp_flowpp.networks.gated_resnet.GatedResNetConfig',
    'tfp_flowpp.networks.layers.Conv2D',
    'tfp_flowpp.networks.layers.LayerNorm',
}
_REQUIRED_FUNCTIONS = (
    'tfp_flowpp.bijectors.mixture_cdf.mixture_logistic_terms',
    'tfp_flowpp.bijectors.mixture_cdf.mixture_logistic_logit_cdf',
    'tfp_flowpp.bijectors.mixture_cdf.invert_mixture_logistic_logit_cdf',
    'tfp_flowpp.networks.blocks.attention',
    'tfp_flowpp.networks.layers.concat_elu',
    'tfp_flowpp.networks.layers.gate',
)


def _module_names():
  return sorted(
      info.name
      for info in pkgutil.walk_packages(tfp_flowpp.__path__, 'tfp_flowpp.'))


def _doctests(module):
  """The module's doctests with examples, each in a fresh empty namespace."""
  tests = doctest.DocTestFinder().find(module, globs={})
  return [test for test in tests if test.examples]


def _modules_with_examples():
  return [
      name for name in _module_names()
      if _doctests(importlib.import_module(name))
  ]


def _public_classes():
  """{'module.Class': class} over the documented packages' ``__all__``s.

  Named tuples are result records (their docstring is generated) and
  exceptions are errors, not bijectors, distributions or networks, so both
  are left out.
  """
  classes = {}
  for name in _module_names():
    if not name.startswith(_DOCUMENTED_PACKAGES):
      continue
    module = importlib.import_module(name)
    for attribute in getattr(module, '__all__', ()):
      value = getattr(module, attribute)
      if inspect.isclass(value) and not issubclass(value,
                                                     (tuple, Exception)):
        classes[f'{value.__module__}.{value.__qualname__}'] = value
  return classes


def _resolve(qualified_name):
  module_name, attribute = qualified_name.rsplit('.', 1)
  return getattr(importlib.import_module(module_name), attribute)


def _own_doc(obj):
  """``obj``'s own docstring (`inspect.getdoc` would fall back to a base's)."""
  return inspect.cleandoc(obj.__doc__ or '')


def _checked_examples(obj):
  """``obj``'s own ``>>>`` examples that print something to compare."""
  examples = doctest.DocTestParser().get_examples(_own_doc(obj))
  return [example for example in examples if example.want]


_MODULES_WITH_EXAMPLES = _modules_with_examples()
_PUBLIC_CLASSES = _public_classes()


@pytest.mark.parametrize('module_name', _MODULES_WITH_EXAMPLES)
def test_examples_run(module_name):
  module = importlib.import_module(module_name)
  runner = doctest.DocTestRunner(optionflags=_OPTIONFLAGS)
  report = []
  for test in _doctests(module):
    runner.run(test, out=report.append)
  assert runner.tries and not runner.failures, ''.join(report)


def test_public_classes_are_discovered():
  missing = _REQUIRED_CLASSES - set(_PUBLIC_CLASSES)
  assert not missing, f'not in any __all__: {sorted(missing)}'


@pytest.mark.parametrize('qualified_name', sorted(_PUBLIC_CLASSES))
def test_help_shows_math_examples_and_references(qualified_name):
  cls = _PUBLIC_CLASSES[qualified_name]
  doc = _own_doc(cls)
  assert '```none' in doc, f'{qualified_name} docstring has no math block'
  for heading in ('#### Examples', '#### References'):
    assert heading in doc, f'{qualified_name} docstring has no {heading!r}'
  assert 'arxiv.org/abs/' in doc.split('#### References', 1)[1], (
      f'{qualified_name}: references without an arXiv link')
  # `help()` renders the class docstring before the inherited members.
  page = pydoc.render_doc(cls, renderer=pydoc.plaintext)
  class_section = re.split(
      r'Method resolution order:|Methods defined here:', page, maxsplit=1)[0]
  for line in ('#### Examples', '#### References', '>>> '):
    assert line in class_section, f'help({qualified_name}) lacks {line!r}'
  # The examples belong to the class docstring and run in its module's case.
  assert _checked_examples(cls), f'{qualified_name}: no checked >>> example'
  assert cls.__module__ in _MODULES_WITH_EXAMPLES


@pytest.mark.parametrize('qualified_name', _REQUIRED_FUNCTIONS)
def test_math_functions_have_examples_and_references(qualified_name):
  function = _resolve(qualified_name)
  assert _checked_examples(function), (
      f'{qualified_name}: no checked >>> example')
  assert '#### References' in _own_doc(function), qualified_name
  assert function.__module__ in _MODULES_WITH_EXAMPLES
