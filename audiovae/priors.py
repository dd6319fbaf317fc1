"""Priors over latent sequences: what `generate` draws from and what the VAE's KL is measured against.

`GaussianPrior` (independent N(0, I) frames) is what every VAE is trained against. A learned prior over a
run's latent sequences registers itself here as well; nothing outside a prior draws latent noise.
"""

from __future__ import annotations

import torch

from audiovae.models.base import Posterior


class Prior:
    """p(z) over latent sequences z: (batch, latent_size, frames)."""

    name: str = ""

    def sample(self, shape: tuple[int, int, int], temperature: float = 1.0,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw latent sequences of `shape` (batch, latent_size, frames); temperature scales the spread."""
        raise NotImplementedError

    def kl(self, posterior: Posterior) -> torch.Tensor:
        """KL(q(z|x) || p(z)) per latent value, in nats: (batch, latent_size, frames)."""
        raise NotImplementedError


class GaussianPrior(Prior):
    """Independent standard normal frames: the prior every VAE is trained against."""

    name = "gaussian"

    def sample(self, shape: tuple[int, int, int], temperature: float = 1.0,
               generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.randn(shape, generator=generator) * temperature

    def kl(self, posterior: Posterior) -> torch.Tensor:
        """0.5 * (mean^2 + var - 1 - log var): zero exactly at the prior (mean 0, logvar 0), positive elsewhere."""
        return 0.5 * (posterior.mean.square() + posterior.logvar.exp() - 1.0 - posterior.logvar)


GAUSSIAN = GaussianPrior()
