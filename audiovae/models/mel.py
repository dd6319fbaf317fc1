"""The 'mel' family: the conv family's design over log-mel frames (inverted to audio by the representation)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from audiovae.models.base import VAE, Family, Posterior, split_posterior
from audiovae.models.conv import ConvDecoder, ConvEncoder, ConvModelConfig
from audiovae.nn.faces import WholeSignal
from audiovae.nn.spectral import LogMelFront, MelInversion
from audiovae.nn.streaming import folded_copy
from audiovae.schema import require

if TYPE_CHECKING:
    from audiovae.config import Recipe


@dataclass(frozen=True)
class MelModelConfig(ConvModelConfig):
    """The conv family's keys, over mel frames: strides count frames, and there are no sub-bands."""

    family: str = "mel"

    def __post_init__(self):
        super().__post_init__()
        require(self.bands == 1, "bands", "sub-bands apply to waveform models only")
        require(not self.causal, "causal", "the mel family cannot stream (Griffin-Lim needs whole spectrograms); "
                "use family conv for a realtime model")


class MelVAE(VAE):
    """Log-mel frame VAE. Input and output: (batch, n_mels, frames) of natural-log mel magnitudes."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module, latent_size: int, hop: int, n_mels: int,
                 pad_value: Callable[[torch.Tensor], float], offset: float = -5.0):
        super().__init__()
        self.pad_value = pad_value  # the representation's silence
        self.encoder, self.decoder = encoder, decoder
        self.latent_size, self.hop, self.input_channels = latent_size, hop, n_mels
        self.offset = offset  # log-mels sit far below zero; centring them makes the start of training easier

    def _encode(self, x: torch.Tensor) -> Posterior:
        return split_posterior(self.encoder(x - self.offset))

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z) + self.offset


def build_mel(recipe: Recipe) -> VAE:
    """The log-mel model of a recipe's model section."""
    config, representation = recipe.model, recipe.data.representation
    n_mels = representation.channels
    return MelVAE(ConvEncoder(n_mels, config), ConvDecoder(n_mels, config), config.latent_size,
                  config.total_stride, n_mels, representation.pad_value)


def check_mel(recipe: Recipe) -> None:
    frames = recipe.training_samples // recipe.data.representation.samples_per_step
    stride = recipe.model.total_stride
    require(frames % stride == 0, "model.strides", f"product {stride} must divide the mel frames per segment ({frames})")


class MelWholeSignal(WholeSignal):
    """The export face of a mel model: audio -> log-mel -> latents, and latents -> log-mel -> Griffin-Lim audio,
    with the spectral transforms as convolutions (audiovae.nn.spectral) so that ONNX can run them. Whole
    signals only: Griffin-Lim needs the whole spectrogram."""

    exact_decode = False  # Griffin-Lim grows rounding differences: runtimes agree to ~1% of the peak, not 1e-5

    def __init__(self, net: MelVAE, recipe: Recipe):
        super().__init__()
        from audiovae.dsp import GRIFFIN_LIM_ITERATIONS, mel_filterbank

        net = folded_copy(net).eval()
        mel, rate = recipe.data.mel, recipe.data.sample_rate
        filterbank = mel_filterbank(mel.n_fft, mel.n_mels, rate, mel.f_min, mel.f_max)
        self.front = LogMelFront(filterbank, mel.n_fft, mel.hop_length, mel.log_floor)
        self.back = MelInversion(filterbank, mel.n_fft, mel.hop_length, GRIFFIN_LIM_ITERATIONS)
        self.encoder, self.decoder, self.offset = net.encoder, net.decoder, net.offset
        self.setup(net.latent_size, net.hop * mel.hop_length)

    def encode_padded(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(self.front(x) - self.offset)[:, : self.latent_size]

    @torch.jit.export
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.back(self.decoder(z) + self.offset)


FAMILY = Family("mel", MelModelConfig, build_mel, "mel", check_mel, MelWholeSignal)
