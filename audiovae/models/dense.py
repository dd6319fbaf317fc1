"""The 'dense' family: the fully connected VAE of the classic example, over whole fixed-length segments."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from audiovae.config.schema import require
from audiovae.models.base import VAE, Family, Posterior, split_posterior
from audiovae.nn.host_faces import WholeSignal
from audiovae.nn.streaming import folded_copy

if TYPE_CHECKING:
    from audiovae.config.recipe import Recipe


@dataclass(frozen=True)
class DenseModelConfig:
    """Fully connected VAE over whole fixed-length segments (the documents' example)."""

    family: str = "dense"
    hidden: tuple[int, ...] = (256, 128)
    latent_size: int = 16

    def __post_init__(self):
        require(all(h >= 1 for h in self.hidden), "hidden", "sizes must be positive")
        require(self.latent_size >= 1, "latent_size", "must be positive")


def _mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class DenseVAE(VAE):
    """(batch, 1, segment_samples) -> one latent vector (batch, latent_size, 1) -> (batch, 1, segment_samples).

    The hop is the whole segment: longer inputs are cut into segments, each encoded on its own.
    """

    frames_see_neighbours = False  # each segment is encoded and decoded on its own

    def __init__(self, encoder: nn.Module, decoder: nn.Module, latent_size: int, segment_samples: int):
        super().__init__()
        self.encoder, self.decoder = encoder, decoder
        self.latent_size, self.hop, self.input_channels = latent_size, segment_samples, 1

    def encode_frames(self, x: torch.Tensor) -> Posterior:
        batch, _, length = x.shape
        frames = length // self.hop
        segments = x.reshape(batch * frames, self.hop)  # (B * frames, hop)
        stats = self.encoder(segments).reshape(batch, frames, -1).transpose(1, 2)
        return split_posterior(stats)  # (B, latent, frames)

    def decode_frames(self, z: torch.Tensor) -> torch.Tensor:
        batch, latent, frames = z.shape
        out = self.decoder(z.transpose(1, 2).reshape(batch * frames, latent))
        return out.reshape(batch, 1, frames * self.hop)


def build_dense(recipe: Recipe) -> VAE:
    """The documents' example: segment -> hidden[0] -> hidden[1] -> latent, and the mirror."""
    config, segment_samples = recipe.model, recipe.data.segment_samples
    sizes = [segment_samples, *config.hidden]
    encoder = _mlp([*sizes, 2 * config.latent_size])
    decoder = _mlp([config.latent_size, *reversed(sizes)])
    return DenseVAE(encoder, decoder, config.latent_size, segment_samples)


def check_dense(recipe: Recipe) -> None:
    require(recipe.train.crop_samples is None, "train.crop_samples", "the dense model needs whole segments")


class DenseWholeSignal(WholeSignal):
    """The export face of a dense model: every `segment_samples` of audio is one latent frame, on its own."""

    def __init__(self, net: DenseVAE, recipe: Recipe):
        super().__init__()
        net = folded_copy(net).eval()  # a copy: export freezes its parameters
        self.encoder, self.decoder = net.encoder, net.decoder
        self.setup(net.latent_size, net.hop)

    def encode_padded(self, x: torch.Tensor) -> torch.Tensor:
        stats = self.encoder(x.reshape(-1, self.hop)).reshape(x.shape[0], -1, 2 * self.latent_size)
        return stats.transpose(1, 2)[:, : self.latent_size]  # (B, latent, frames)

    @torch.jit.export
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        out = self.decoder(z.transpose(1, 2).reshape(-1, self.latent_size))  # (B * frames, hop)
        return out.reshape(z.shape[0], 1, -1)


FAMILY = Family("dense", DenseModelConfig, build_dense, ("wave",), check_dense, DenseWholeSignal)
