"""Flow bijectors: `tfp.bijectors.Bijector` subclasses, one concept per module.

Direction convention (the papers'): ``forward`` maps data to latent (the
"normalising" direction, analytic for every layer here), ``inverse`` maps
latent to data. A density model is therefore
``tfd.TransformedDistribution(base, tfb.Invert(flow))``; a sampler whose
analytic direction generates (the variational dequantizer) uses ``flow``
directly.
"""

from tfp_flowpp.bijectors.actnorm import ActNorm
from tfp_flowpp.bijectors.additive_coupling import AdditiveCoupling
from tfp_flowpp.bijectors.affine_coupling import AffineCoupling
from tfp_flowpp.bijectors.conditioning import conditional_kwargs
from tfp_flowpp.bijectors.coupling import CouplingBijector
from tfp_flowpp.bijectors.couplings import COUPLINGS
from tfp_flowpp.bijectors.factor_out import FactorOut
from tfp_flowpp.bijectors.fused_log_det import FusedLogDetBijector
from tfp_flowpp.bijectors.invertible_conv1x1 import InvertibleConv1x1
from tfp_flowpp.bijectors.logit_preprocess import LogitPreprocess
from tfp_flowpp.bijectors.mix_logistic_coupling import MixLogisticCoupling
from tfp_flowpp.bijectors.splits import ChannelSplit
from tfp_flowpp.bijectors.splits import CheckerboardSplit
from tfp_flowpp.bijectors.splits import SPLITS
from tfp_flowpp.bijectors.splits import StripeSplit
from tfp_flowpp.bijectors.squeeze import Squeeze

__all__ = [
    'ActNorm',
    'AdditiveCoupling',
    'AffineCoupling',
    'COUPLINGS',
    'ChannelSplit',
    'CheckerboardSplit',
    'CouplingBijector',
    'FactorOut',
    'FusedLogDetBijector',
    'InvertibleConv1x1',
    'LogitPreprocess',
    'MixLogisticCoupling',
    'SPLITS',
    'Squeeze',
    'StripeSplit',
    'conditional_kwargs',
]
