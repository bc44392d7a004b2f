"""Conditioner networks (plain `tf.Module`s, built eagerly)."""

from tfp_flowpp.networks.coupling_networks import COUPLING_NETWORKS
from tfp_flowpp.networks.coupling_networks import FlowppCouplingNetwork
from tfp_flowpp.networks.coupling_networks import GlowCouplingNetwork
from tfp_flowpp.networks.coupling_networks import ZeroConvNetwork
from tfp_flowpp.networks.gated_resnet import GatedResNet
from tfp_flowpp.networks.gated_resnet import GatedResNetConfig
from tfp_flowpp.networks.gated_resnet import MIXERS

__all__ = [
    'COUPLING_NETWORKS', 'FlowppCouplingNetwork', 'GatedResNet',
    'GatedResNetConfig', 'GlowCouplingNetwork', 'MIXERS', 'ZeroConvNetwork'
]
