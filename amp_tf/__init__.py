"""amp-tf: out-of-distribution detection with neural network anchoring (AMP)."""
__version__ = "0.1.0"
