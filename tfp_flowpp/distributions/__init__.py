"""Distributions: the discrete image model and its dequantizers."""

from tfp_flowpp.distributions.class_conditioning import ClassConditioning
from tfp_flowpp.distributions.dequantization import DEQUANTIZERS
from tfp_flowpp.distributions.dequantization import UniformDequantizer
from tfp_flowpp.distributions.dequantization import VariationalDequantizer
from tfp_flowpp.distributions.discrete_image_flow import DiscreteImageFlow

__all__ = [
    'ClassConditioning', 'DEQUANTIZERS', 'DiscreteImageFlow', 'UniformDequantizer',
    'VariationalDequantizer'
]
