"""tfp_flowpp: Flow++ and the NICE/RealNVP/Glow family, the TFP way."""

__version__ = '0.1.0'
