"""The 'conv' and 'mel' families: strided 1-D convolutions with dilated residual blocks, and a mirror."""

from __future__ import annotations

import torch
from torch import nn

from audiovae.config import ConvModelConfig
from audiovae.errors import UserError
from audiovae.models.base import VAE, Posterior, split_posterior
from audiovae.nn.blocks import DecoderBlock, EncoderBlock, activation, wn_conv1d
from audiovae.nn.pqmf import PQMF


def _widths(config: ConvModelConfig) -> list[int]:
    """Channels at each level: channels, 2x, 4x, ... capped at max_channels (len(strides) + 1 entries)."""
    return [min(config.channels * 2**i, config.max_channels) for i in range(len(config.strides) + 1)]


class ConvEncoder(nn.Sequential):
    """(batch, in_channels, T) -> (batch, 2 * latent_size, T / prod(strides)): mean and log-variance."""

    def __init__(self, in_channels: int, config: ConvModelConfig):
        widths = _widths(config)
        k, act, layers, causal = config.kernel_size, config.activation, config.residual_layers, config.causal
        blocks = [wn_conv1d(in_channels, widths[0], k, causal=causal)]
        for i, stride in enumerate(config.strides):
            blocks.append(EncoderBlock(widths[i], widths[i + 1], stride, layers, k, act, causal))
        blocks += [activation(act, widths[-1]), wn_conv1d(widths[-1], 2 * config.latent_size, 3, causal=causal)]
        super().__init__(*blocks)


class ConvDecoder(nn.Sequential):
    """(batch, latent_size, frames) -> (batch, out_channels, frames * prod(strides))."""

    def __init__(self, out_channels: int, config: ConvModelConfig):
        widths = _widths(config)[::-1]
        k, act, layers, causal = config.kernel_size, config.activation, config.residual_layers, config.causal
        blocks = [wn_conv1d(config.latent_size, widths[0], k, causal=causal)]
        for i, stride in enumerate(reversed(config.strides)):
            blocks.append(DecoderBlock(widths[i], widths[i + 1], stride, layers, k, act, causal))
        blocks += [activation(act, widths[-1]), wn_conv1d(widths[-1], out_channels, k, causal=causal)]
        super().__init__(*blocks)


class ConvVAE(VAE):
    """Waveform VAE, optionally on PQMF sub-bands. Input and output: (batch, 1, samples), in [-1, 1].

    A causal model's PQMF pair delays the signal by `latency_samples`; encode pads that much on the right
    and decode drops it on the left, so offline output lines up with the input (the streaming output of
    audiovae.nn.streaming is this output `latency_samples` later).
    """

    features = "wave"

    def __init__(self, encoder: nn.Module, decoder: nn.Module, latent_size: int, hop: int, pqmf: PQMF | None = None):
        super().__init__()
        self.encoder, self.decoder, self.pqmf = encoder, decoder, pqmf
        self.latent_size, self.hop, self.input_channels = latent_size, hop, 1
        self.latency_samples = pqmf.delay if pqmf is not None else 0

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        return super().pad(nn.functional.pad(x, (0, self.latency_samples)) if self.latency_samples else x)

    def latent_frames(self, length: int) -> int:
        return super().latent_frames(length + self.latency_samples)

    def decode(self, z: torch.Tensor, length: int | None = None) -> torch.Tensor:
        if not self.latency_samples:
            return super().decode(z, length)
        length = z.shape[-1] * self.hop if length is None else length
        extra = -(-self.latency_samples // self.hop)  # zero frames that let the last samples come out
        out = self._decode(nn.functional.pad(z, (0, extra)))
        return out[..., self.latency_samples : self.latency_samples + length]

    def _encode(self, x: torch.Tensor) -> Posterior:
        if self.pqmf is not None:
            x = self.pqmf.analysis(x)  # (B, bands, T / bands)
        return split_posterior(self.encoder(x))

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        y = self.decoder(z)
        if self.pqmf is not None:
            y = self.pqmf.synthesis(y)
        return torch.tanh(y)


class MelVAE(VAE):
    """Log-mel frame VAE. Input and output: (batch, n_mels, frames) of natural-log mel magnitudes."""

    features = "mel"

    def __init__(self, encoder: nn.Module, decoder: nn.Module, latent_size: int, hop: int, n_mels: int,
                 offset: float = -5.0):
        super().__init__()
        self.encoder, self.decoder = encoder, decoder
        self.latent_size, self.hop, self.input_channels = latent_size, hop, n_mels
        self.offset = offset  # log-mels sit far below zero; centring them makes the start of training easier

    def _encode(self, x: torch.Tensor) -> Posterior:
        return split_posterior(self.encoder(x - self.offset))

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z) + self.offset

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        remainder = x.shape[-1] % self.hop
        # pad log-mel frames with the floor value (silence), not zero (which is loud in log units)
        return x if remainder == 0 else nn.functional.pad(x, (0, self.hop - remainder), value=float(x.min()))


def build_conv(config: ConvModelConfig) -> VAE:
    """The waveform model of a recipe's model section."""
    pqmf = PQMF(config.bands, config.causal) if config.bands > 1 else None
    encoder = ConvEncoder(config.bands, config)
    decoder = ConvDecoder(config.bands, config)
    return ConvVAE(encoder, decoder, config.latent_size, config.total_stride, pqmf)


def build_mel(config: ConvModelConfig, n_mels: int) -> VAE:
    """The log-mel model of a recipe's model section."""
    if config.causal:  # Griffin-Lim needs whole spectrograms: a causal mel model could not stream anyway
        raise UserError("model.causal: the mel family cannot stream; use family conv for a realtime model")
    return MelVAE(ConvEncoder(n_mels, config), ConvDecoder(n_mels, config), config.latent_size,
                  config.total_stride, n_mels)
