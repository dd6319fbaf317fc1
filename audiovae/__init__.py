"""audiovae: learn generative models of sound with variational autoencoders."""

__version__ = "0.1.0"
