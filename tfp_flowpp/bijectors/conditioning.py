"""Routing conditioning keyword arguments through nested TFP bijectors.

`tfb.Chain` forwards ``kwargs[child.name]`` to each child; `tfb.Invert` and
`FactorOut` forward their kwargs unchanged. `conditional_kwargs` builds that
nested dictionary for every coupling in a bijector tree, so a
`TransformedDistribution` can be conditioned with

    dist.sample(seed=seed, bijector_kwargs=conditional_kwargs(
        dist.bijector, context=features, training=True))

which is how the variational dequantizer receives its context.
"""

from tensorflow_probability.python.bijectors import chain as chain_lib
from tensorflow_probability.python.bijectors import invert as invert_lib

from tfp_flowpp.bijectors import coupling
from tfp_flowpp.bijectors import factor_out

# `tfb.Chain(...)` / `tfb.Invert(...)` return instances of these private base
# classes unless every part is a CompositeTensor, so isinstance checks against
# the public names miss them.
_CHAIN_TYPES = (chain_lib._Chain,)  # pylint: disable=protected-access
_INVERT_TYPES = (invert_lib._Invert,)  # pylint: disable=protected-access

__all__ = ['conditional_kwargs']


def conditional_kwargs(bijector, **kwargs):
  """Returns the kwargs TFP should receive for ``bijector``.

  Args:
    bijector: a bijector tree of `tfb.Chain`, `tfb.Invert`, `FactorOut` and
      leaves; only `CouplingBijector` leaves accept conditioning.
    **kwargs: e.g. ``context=tensor, training=True``; `None` values dropped.

  Returns:
    A (possibly nested) dict suitable as ``bijector_kwargs``.
  """
  kwargs = {k: v for k, v in kwargs.items() if v is not None}
  if isinstance(bijector, _CHAIN_TYPES):
    routed = {}
    names = [child.name for child in bijector.bijectors]
    for child in bijector.bijectors:
      child_kwargs = conditional_kwargs(child, **kwargs)
      if child_kwargs:
        if names.count(child.name) > 1:
          raise ValueError(
              f'{bijector.name}: {names.count(child.name)} bijectors are '
              f'named {child.name!r}; TFP routes conditioning by name, so '
              'conditional bijectors need unique names.')
        routed[child.name] = child_kwargs
    return routed
  if isinstance(bijector, _INVERT_TYPES + (factor_out.FactorOut,)):
    return conditional_kwargs(bijector.bijector, **kwargs)
  if isinstance(bijector, coupling.CouplingBijector):
    return {
        k: v for k, v in kwargs.items() if k in bijector.conditional_kwarg_names
    }
  return {}
