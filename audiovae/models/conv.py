"""The 'conv' family: a waveform VAE of strided 1-D convolutions with dilated residual blocks, and a mirror,
optionally behind a PQMF filter bank."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from audiovae.config.schema import choice, require
from audiovae.errors import UserError
from audiovae.models.base import VAE, Family, Posterior, split_posterior
from audiovae.nn.blocks import (
    UPSAMPLERS,
    DecoderBlock,
    EncoderBlock,
    LabelEmbedding,
    activation,
    wn_conv1d,
)
from audiovae.nn.host_faces import LabelledStack, StatefulStreaming, WholeSignal, held_label
from audiovae.nn.istft import PHASES, ISTFTDecoder
from audiovae.nn.pqmf import PQMF
from audiovae.nn.streaming import StreamingVAE, folded_copy

if TYPE_CHECKING:
    from audiovae.config.recipe import Recipe


@dataclass(frozen=True)
class ConvModelConfig:
    """1-D convolutional encoder/decoder (family 'conv'; the 'mel' family shares the design)."""

    family: str = "conv"
    channels: int = 32  # width after the input convolution; doubles at each downsampling
    max_channels: int = 256
    strides: tuple[int, ...] = (4, 4, 4, 4)
    latent_size: int = 16
    residual_layers: int = 3  # dilated residual units per block, dilations 1, 3, 9, ...
    kernel_size: int = 7
    activation: str = "snake"  # snake | leaky_relu
    bands: int = 1  # PQMF sub-bands for waveform models (1: off); the convolutions run at a bands x lower rate
    causal: bool = False  # left padding only: the model streams block by block (docs/realtime.md)
    decoder: str = "conv"  # conv: the encoder's mirror; istft: convolutions at the frame rate + inverse STFT
    decoder_channels: int | None = None  # width of the istft decoder; None: max_channels
    istft_phase: str = "absolute"  # istft decoder: absolute | advancing (predicted as deviation from bin centres)
    upsample: str = "transposed"  # conv decoder: transposed | nearest | ramp (repeat or ramp + conv: no frame-rate comb)
    # a learned label embedding into the encoder, the decoder and the learned prior: generate by label, transfer
    # a sound to another label (docs/conditional.md); needs a dataset prepared with --labels
    conditional: bool = False
    labels: tuple[str, ...] = ()  # the dataset's label names, written by train into the run's recipe; leave empty

    def __post_init__(self):
        require(self.channels >= 1, "channels", "must be positive")
        require(self.max_channels >= self.channels, "max_channels", "must be >= channels")
        require(len(self.strides) >= 1, "strides", "needs at least one stride")
        require(all(s >= 1 for s in self.strides), "strides", "must all be positive")
        require(self.latent_size >= 1, "latent_size", "must be positive")
        require(self.residual_layers >= 0, "residual_layers", "must be >= 0")
        require(self.kernel_size % 2 == 1 and self.kernel_size >= 1, "kernel_size", "must be odd and positive")
        choice("activation", self.activation, ("snake", "leaky_relu"))
        choice("decoder", self.decoder, ("conv", "istft"))
        choice("istft_phase", self.istft_phase, PHASES)
        choice("upsample", self.upsample, UPSAMPLERS)
        require(self.upsample == "transposed" or self.decoder == "conv", "upsample", "needs decoder: conv")
        require(self.istft_phase == "absolute" or self.decoder == "istft", "istft_phase", "needs decoder: istft")
        require(self.decoder_channels is None or self.decoder_channels >= 1, "decoder_channels", "must be positive")
        require(not (self.causal and self.decoder == "istft"), "decoder",
                "the istft decoder does not stream yet; use decoder: conv with causal: true")
        require(self.bands >= 1 and (self.bands & (self.bands - 1)) == 0, "bands", "must be a power of two")
        require(self.conditional or not self.labels, "labels", "are for conditional models (conditional: true)")
        require(len(set(self.labels)) == len(self.labels), "labels", "must not repeat a name")
        require(not self.labels or len(self.labels) >= 2, "labels", "a conditional model needs two labels or more")
        require(not (self.conditional and self.causal), "conditional", "conditional models do not stream yet; "
                "drop causal: true")
        require(not (self.conditional and self.decoder == "istft"), "conditional",
                "conditioning covers the conv decoder (decoder: conv)")

    @property
    def total_stride(self) -> int:
        """Input samples (or frames) per latent frame."""
        total = self.bands
        for stride in self.strides:
            total *= stride
        return total


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
            blocks.append(DecoderBlock(widths[i], widths[i + 1], stride, layers, k, act, causal, config.upsample))
        blocks += [activation(act, widths[-1]), wn_conv1d(widths[-1], out_channels, k, causal=causal)]
        super().__init__(*blocks)


class ConvVAE(VAE):
    """Waveform VAE, optionally on PQMF sub-bands. Input and output: (batch, 1, samples), in [-1, 1].

    A causal model's PQMF pair delays the signal by `latency_samples`; encode pads that much on the right
    and decode drops it on the left, so offline output lines up with the input (the streaming output of
    audiovae.nn.streaming is this output `latency_samples` later).
    """

    def __init__(self, encoder: nn.Module, decoder: nn.Module, latent_size: int, hop: int, pqmf: PQMF | None = None,
                 label_embedding: LabelEmbedding | None = None):
        super().__init__()
        self.encoder, self.decoder, self.pqmf = encoder, decoder, pqmf
        self.label_embedding = label_embedding  # a conditional model's (model.conditional)
        self.latent_size, self.hop, self.input_channels = latent_size, hop, 1
        self.latency_samples = pqmf.delay if pqmf is not None else 0

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        return super().pad(nn.functional.pad(x, (0, self.latency_samples)) if self.latency_samples else x)

    def latent_frames(self, length: int) -> int:
        return super().latent_frames(length + self.latency_samples)

    def decode(self, z: torch.Tensor, length: int | None = None, label: torch.Tensor | None = None) -> torch.Tensor:
        if not self.latency_samples:
            return super().decode(z, length, label)
        self.check_label(label)
        length = z.shape[-1] * self.hop if length is None else length
        extra = -(-self.latency_samples // self.hop)  # zero frames that let the last samples come out
        z = nn.functional.pad(z, (0, extra))
        out = self.decode_frames(z) if label is None else self.decode_frames(z, label=label)
        return out[..., self.latency_samples : self.latency_samples + length]

    def encode_frames(self, x: torch.Tensor, label: torch.Tensor | None = None) -> Posterior:
        if self.pqmf is not None:
            x = self.pqmf.analysis(x)  # (B, bands, T / bands)
        return split_posterior(self.through_encoder(x, label))

    def decode_frames(self, z: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        y = self.through_decoder(z, label)
        if self.pqmf is not None and not isinstance(self.decoder, ISTFTDecoder):  # that one makes the waveform
            y = self.pqmf.synthesis(y)
        return torch.tanh(y)


def build_conv(recipe: Recipe) -> VAE:
    """The waveform model of a recipe's model section."""
    config = recipe.model
    pqmf = PQMF(config.bands, config.causal) if config.bands > 1 else None
    encoder = ConvEncoder(config.bands, config)
    if config.decoder == "istft":
        decoder = ISTFTDecoder(config.latent_size, config.decoder_channels or config.max_channels,
                               config.total_stride, len(config.strides), config.residual_layers, config.kernel_size,
                               config.activation, config.istft_phase)
    else:
        decoder = ConvDecoder(config.bands, config)
    return ConvVAE(encoder, decoder, config.latent_size, config.total_stride, pqmf, label_embedding(config))


def label_embedding(config: ConvModelConfig) -> LabelEmbedding | None:
    """The label biases of a conditional model's encoder and decoder (first layers: widths[0] and widths[-1]), built
    after them so that an unconditional model's weights are drawn as before; None when it is not conditional."""
    if not config.conditional:
        return None
    if not config.labels:
        raise UserError("model.conditional: the model's labels come from the dataset (audiovae train writes them "
                        "into the run's recipe as model.labels); train it on a dataset prepared with --labels")
    widths = _widths(config)
    return LabelEmbedding(len(config.labels), widths[0], widths[-1])


def check_conv(recipe: Recipe) -> None:
    length, stride = recipe.training_samples, recipe.model.total_stride
    require(length % stride == 0, "model.strides",
            f"total stride {stride} (strides x bands) must divide the training length {length}")


class ConvWholeSignal(WholeSignal):
    """The export face of a non-causal conv model (weights folded): whole signals, nothing streamed. A conditional
    model's label travels as input channels (audiovae.nn.host_faces)."""

    def __init__(self, net: ConvVAE):
        super().__init__()
        net = folded_copy(net).eval()
        self.encoder, self.decoder = labelled_stacks(net)
        self.pqmf = net.pqmf if net.pqmf is not None else NoBands()
        self.setup(net.latent_size, net.hop, net.labels)

    def encode_padded(self, x: torch.Tensor) -> torch.Tensor:
        if self.labels == 0:
            return self.encoder(self.pqmf.analysis(x))[:, : self.latent_size]
        bands = self.pqmf.analysis(x[:, :1])
        return self.encoder(torch.cat([bands, held_label(x[:, 1:], bands.shape[-1])], 1))[:, : self.latent_size]

    @torch.jit.export
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.pqmf.synthesis(self.decoder(z)))


class NoBands(nn.Module):
    """PQMF stand-in for models without sub-bands."""

    def analysis(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def synthesis(self, x: torch.Tensor) -> torch.Tensor:
        return x


def labelled_stacks(net: VAE) -> tuple[nn.Module, nn.Module]:
    """A model's encoder and decoder for a host: as they are, or a conditional model's as LabelledStacks, which take
    the label's channels after their input's."""
    if net.label_embedding is None:
        return net.encoder, net.decoder
    return (LabelledStack(net.encoder, net.label_embedding.encoder.weight),
            LabelledStack(net.decoder, net.label_embedding.decoder.weight))


def conv_face(net: VAE, recipe: Recipe) -> nn.Module:
    """What `audiovae export` scripts: a causal model streams block by block, others run whole signals."""
    if isinstance(net.decoder, ISTFTDecoder):
        raise UserError("export covers the conv family with its conv decoder (model.decoder: conv); the istft "
                        "decoder's inverse STFT has no ONNX form yet")
    if recipe.model.causal:
        return StatefulStreaming(StreamingVAE(net))
    return ConvWholeSignal(net)


FAMILY = Family("conv", ConvModelConfig, build_conv, ("wave",), check_conv, conv_face)
