"""The 'mel' family: the conv family's design over frames of log magnitudes, log-mel (features: mel) or log-STFT
(features: spectrogram), inverted to audio by the representation. With model.causal over log-STFT frames it
streams: the causal STFT pair of audiovae.dsp.causal_stft around causal convolutions (docs/realtime.md)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from audiovae.config.schema import require
from audiovae.dsp.causal_stft import causal_log_spectrogram, causal_synthesis
from audiovae.models.base import VAE, Family, Posterior, split_posterior
from audiovae.models.conv import (
    ConvDecoder,
    ConvEncoder,
    ConvModelConfig,
    label_embedding,
    labelled_stacks,
)
from audiovae.nn.blocks import LabelEmbedding
from audiovae.nn.host_faces import StatefulStreaming, WholeSignal, held_label
from audiovae.nn.spectral import LogMelFront, MelInversion
from audiovae.nn.streaming import StreamingVAE, folded_copy
from audiovae.nn.streaming_frames import SpectralEnds

if TYPE_CHECKING:
    from audiovae.config.recipe import Recipe


@dataclass(frozen=True)
class MelModelConfig(ConvModelConfig):
    """The conv family's keys, over frames: strides count frames, and there are no sub-bands."""

    family: str = "mel"

    def __post_init__(self):
        super().__post_init__()
        require(self.bands == 1, "bands", "sub-bands apply to waveform models only")


class MelVAE(VAE):
    """Frame VAE. Input and output: (batch, channels, frames) of natural-log magnitudes (mel bands or STFT bins)."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module, latent_size: int, hop: int, channels: int,
                 pad_value: Callable[[torch.Tensor], float], offset: float = -5.0,
                 label_embedding: LabelEmbedding | None = None):
        super().__init__()
        self.pad_value = pad_value  # the representation's silence
        self.encoder, self.decoder = encoder, decoder
        self.latent_size, self.hop, self.input_channels = latent_size, hop, channels
        self.offset = offset  # log-mels sit far below zero; centring them makes the start of training easier
        self.label_embedding = label_embedding  # a conditional model's (model.conditional)

    def encode_frames(self, x: torch.Tensor, label: torch.Tensor | None = None) -> Posterior:
        return split_posterior(self.through_encoder(x - self.offset, label))

    def decode_frames(self, z: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        return self.through_decoder(z, label) + self.offset


def build_mel(recipe: Recipe) -> VAE:
    """The frame model of a recipe's model section, as wide as its representation's frames."""
    config, representation = recipe.model, recipe.data.representation
    channels = representation.channels
    encoder, decoder = ConvEncoder(channels, config), ConvDecoder(channels, config)  # built first: same weights
    return MelVAE(encoder, decoder, config.latent_size, config.total_stride, channels, representation.pad_value,
                  label_embedding=label_embedding(config))


def check_mel(recipe: Recipe) -> None:
    frames = recipe.training_samples // recipe.data.representation.samples_per_step
    stride = recipe.model.total_stride
    require(frames % stride == 0, "model.strides", f"product {stride} must divide the frames per segment ({frames})")
    if recipe.model.causal:  # it streams: every piece of the way from audio to audio must run block by block
        require(recipe.data.features == "spectrogram", "model.causal",
                "mel frames cannot stream (Griffin-Lim needs whole spectrograms); use features: spectrogram")
        require(recipe.synthesis.streams, "synthesis.method", "a causal frame model needs a method with a causal "
                "form and no Griffin-Lim iterations (peaks, textured or advancing, iterations: 0)")
        mel = recipe.data.mel
        require(mel.n_fft % mel.hop_length == 0 and mel.n_fft // mel.hop_length >= 3, "data.mel.hop_length",
                f"a causal frame model's hop must divide n_fft ({mel.n_fft}) at least 3 times (a steady overlap-add)")


def live_reconstruction(net: MelVAE, recipe: Recipe, wave: torch.Tensor) -> torch.Tensor:
    """A causal frame model's offline pass from audio to audio, by the causal STFT pair (audiovae.dsp.causal_stft):
    wave (batch, time) -> (batch, time). Its stream (live_face) gives the same samples `latency_samples` later.

    The input is zero-padded by n_fft - hop (the frames over its last samples) and to whole latent frames."""
    mel = recipe.data.mel
    length, hop = wave.shape[-1], net.hop * mel.hop_length
    padded = nn.functional.pad(wave, (0, -(-(length + mel.n_fft - mel.hop_length) // hop) * hop - length))
    frames = causal_log_spectrogram(padded, mel.n_fft, mel.hop_length, mel.log_floor)
    decoded = net.decode_frames(net.encode_frames(frames).mean)
    advance = recipe.synthesis.phase_advance(mel.n_fft, mel.hop_length).to(wave.device)
    return causal_synthesis(decoded, advance)[..., :length]


def streaming_frames(net: MelVAE, recipe: Recipe) -> StreamingVAE:
    """A causal frame model as streaming layers: audio blocks in, audio blocks out, latency n_fft - hop samples."""
    mel = recipe.data.mel
    ends = SpectralEnds(mel.n_fft, mel.hop_length, mel.log_floor, net.offset,
                        recipe.synthesis.phase_advance(mel.n_fft, mel.hop_length))
    return StreamingVAE(net, ends).to(next(net.parameters()).dtype)  # the transforms' bases too


class MelWholeSignal(WholeSignal):
    """The export face of a mel model: audio -> log frames -> latents, and latents -> log frames -> Griffin-Lim audio,
    with the spectral transforms as convolutions (audiovae.nn.spectral) so that ONNX can run them. Whole
    signals only: Griffin-Lim needs the whole spectrogram."""

    exact_decode = False  # Griffin-Lim grows rounding differences: runtimes agree to ~1% of the peak, not 1e-5

    def __init__(self, net: MelVAE, recipe: Recipe):
        super().__init__()
        net = folded_copy(net).eval()
        mel = recipe.data.mel
        representation = recipe.data.representation
        filterbank = representation.filterbank()  # the identity for spectrogram frames
        self.front = LogMelFront(filterbank, mel.n_fft, mel.hop_length, mel.log_floor)
        self.back = MelInversion(filterbank, mel.n_fft, mel.hop_length, recipe.synthesis)  # the run's stored method
        (self.encoder, self.decoder), self.offset = labelled_stacks(net), net.offset
        self.setup(net.latent_size, net.hop * mel.hop_length, net.labels)
        self.example_frames = max(2, mel.n_fft // self.hop + 1)  # export's test blocks: longer than n_fft / 2

    def encode_padded(self, x: torch.Tensor) -> torch.Tensor:
        if self.labels == 0:
            return self.encoder(self.front(x) - self.offset)[:, : self.latent_size]
        frames = self.front(x[:, :1]) - self.offset
        return self.encoder(torch.cat([frames, held_label(x[:, 1:], frames.shape[-1])], 1))[:, : self.latent_size]

    @torch.jit.export
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.back(self.decoder(z) + self.offset)


def mel_face(net: MelVAE, recipe: Recipe) -> nn.Module:
    """What `audiovae export` scripts: a causal model streams block by block, others run whole signals."""
    if recipe.model.causal:
        return StatefulStreaming(streaming_frames(net, recipe))
    return MelWholeSignal(net, recipe)


# bf16 on this machine's AMX: 1.6-1.75x the steps a second in bench/train.py, 1.2-1.6x in the real loop
FAMILY = Family("mel", MelModelConfig, build_mel, ("mel", "spectrogram"), check_mel, mel_face, cpu_bf16=True)
