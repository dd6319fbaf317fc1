"""Priors over latent sequences: N(0, I), the learned autoregressive prior, and its face for hosts."""
