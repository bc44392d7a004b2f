"""The coupling registry: ``ModelConfig.coupling`` name → coupling class.

Beside `splits.SPLITS`. Each class is a `CouplingBijector` that declares its
parameter layout (`params_per_channel_from_config`) and how a `ModelConfig`
builds it (`from_config`); the model builder, the config's choices and the
command-line flag (its help is each class docstring's first line) all read
this one mapping. Adding a coupling is one module and one entry here (with
its import); see docs/adding_a_coupling.md.
"""

from tfp_flowpp.bijectors import additive_coupling
from tfp_flowpp.bijectors import affine_coupling
from tfp_flowpp.bijectors import mix_logistic_coupling

__all__ = ['COUPLINGS']

COUPLINGS = {
    'mix_logistic': mix_logistic_coupling.MixLogisticCoupling,
    'affine': affine_coupling.AffineCoupling,
    'additive': additive_coupling.AdditiveCoupling,
}
