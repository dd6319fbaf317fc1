"""Priors over latent sequences: what `generate` draws from and what the VAE's KL is measured against.

`GaussianPrior` (independent N(0, I) frames) is what every VAE is trained against. A learned prior over a
run's latent sequences registers itself here as well; nothing outside a prior draws latent noise.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch

from audiovae.models.base import Posterior


class Prior:
    """p(z) over latent sequences z: (batch, latent_size, frames)."""

    name: str = ""

    def sample(self, shape: tuple[int, int, int], temperature: float = 1.0,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw latent sequences of `shape` (batch, latent_size, frames); temperature scales the spread."""
        raise NotImplementedError

    def sample_stream(self, batch: int, latent_size: int, frames: int, temperature: float = 1.0,
                      generator: torch.Generator | Sequence[torch.Generator] | None = None, chunk_frames: int = 256,
                      prompt: torch.Tensor | None = None) -> Iterator[torch.Tensor]:
        """Latents (batch, latent_size, frames) in chunks of <= chunk_frames, continuing `prompt` (batch,
        latent_size, frames) where the prior can; given one generator per row, row i is drawn from generator i
        alone. This one draws them whole (a few MB for 10 minutes of quickstart latents)."""
        if isinstance(generator, torch.Generator | None):
            whole = self.sample((batch, latent_size, frames), temperature, generator)
        else:
            whole = torch.cat([self.sample((1, latent_size, frames), temperature, g) for g in generator])
        yield from whole.split(chunk_frames, -1)

    def kl(self, posterior: Posterior) -> torch.Tensor:
        """KL(q(z|x) || p(z)) per latent value, in nats: (batch, latent_size, frames)."""
        raise NotImplementedError

    def nll(self, z: torch.Tensor) -> float:
        """Negative log-likelihood of latent sequences (batch, latent_size, frames) in nats per frame."""
        raise NotImplementedError


class GaussianPrior(Prior):
    """Independent standard normal frames: the prior every VAE is trained against."""

    name = "gaussian"

    def sample(self, shape: tuple[int, int, int], temperature: float = 1.0,
               generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.randn(shape, generator=generator) * temperature

    def nll(self, z: torch.Tensor) -> float:
        return float((0.5 * (z.double().square() + math.log(2 * math.pi))).sum(1).mean())

    def kl(self, posterior: Posterior) -> torch.Tensor:
        """0.5 * (mean^2 + var - 1 - log var): zero exactly at the prior (mean 0, logvar 0), positive elsewhere."""
        return posterior.kl()


GAUSSIAN = GaussianPrior()
