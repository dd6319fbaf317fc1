"""Priors over latent sequences: what `generate` draws from and what the VAE's KL is measured against.

`GaussianPrior` (independent N(0, I) frames) is what every VAE is trained against. A learned prior over a
run's latent sequences registers itself here as well; nothing outside a prior draws latent noise.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import nn

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


class NormalizedLatents(nn.Module):
    """A learned prior's model over latent sequences (batch, latent_size, frames), which works in per-dim normalized
    units: the train latents' mean and std are buffers, so they travel in its state dict. Every prior kind's model
    (audiovae.priors.learned.PRIOR_MODELS) starts from it."""

    def __init__(self, latent_size: int):
        super().__init__()
        self.latent_size = latent_size
        self.register_buffer("latent_mean", torch.zeros(latent_size))
        self.register_buffer("latent_std", torch.ones(latent_size))

    def set_normalization(self, latents: Sequence[np.ndarray]) -> None:
        """Per-dim mean and std of the train latents, each (latent_size, frames)."""
        values = np.concatenate([np.asarray(z, np.float64) for z in latents], axis=1)
        self.latent_mean.copy_(torch.from_numpy(values.mean(axis=1)).float())
        self.latent_std.copy_(torch.from_numpy(values.std(axis=1)).float().clamp_min(1e-4))

    def normalize(self, z: torch.Tensor) -> torch.Tensor:
        """Latents (batch, latent_size, frames) in the units the prior models: each dimension's training mean
        removed and divided by its standard deviation."""
        return (z - self.latent_mean[:, None]) / self.latent_std[:, None]
