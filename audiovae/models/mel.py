"""The 'mel' family: the conv family's design over frames of log magnitudes, log-mel (features: mel) or log-STFT
(features: spectrogram), inverted to audio by the representation. With model.causal over log-STFT frames it
streams: the causal STFT pair of audiovae.dsp.causal_stft around causal convolutions (docs/realtime.md)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from audiovae.config.schema import require
from audiovae.dsp.causal_stft import causal_log_spectrogram, causal_synthesis
from audiovae.dsp.inversion import locked_phases
from audiovae.dsp.inversion.peaks import PeakAdvance
from audiovae.errors import UserError
from audiovae.models.base import VAE, Family, Posterior, split_posterior
from audiovae.models.conv import ConvDecoder, ConvEncoder, ConvModelConfig
from audiovae.nn.blocks import wn_conv1d
from audiovae.nn.host_faces import StatefulStreaming, WholeSignal
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


class PhaseHead(nn.Module):
    """A frame model's learned phase: phases locked to the peaks of its own magnitudes (synthesis method `peaks`'s
    causal form, audiovae.dsp.inversion.peaks.PeakAdvance, a running sum along time) with two learned angles per bin
    and frame, each the atan2 of a pseudo-real and a pseudo-imaginary part from a 1-wide convolution of the
    decoder's last hidden layer (APNet's phase output, Ai and Ling 2023): one added to each bin's advance from the
    previous frame before the running sum (the frequency that the peaks' parabola misses), one added to the
    phase after it (what the lobe's pi per bin misses: a transient's place in the window).

    A network of convolutions gives the same output for the same input wherever it stands, so it cannot make a
    held tone's phase advance from frame to frame by itself: the running sum does that, and the angles it learns
    are corrections that stay the same while a sound does. Causal as the convolutions are (the running sum and the
    angles look at no later frame), so the causal frame models can use it once the streaming ends carry it.

    hidden (batch, width, frames), log_magnitude (batch, bins, frames) -> phases (batch, bins, frames) in
    radians, [-pi, pi); each sound (or chunk of one) starts its running sum at 0."""

    def __init__(self, width: int, bins: int, n_fft: int, hop_length: int, causal: bool = False):
        super().__init__()
        self.advance = PeakAdvance(n_fft, hop_length)
        self.parts = wn_conv1d(width, 4 * bins, 1, causal=causal)
        with torch.no_grad():  # start near no corrections: pseudo-real parts 1, imaginary ones near 0
            self.parts.bias.view(4, bins)[0::2] = 1.0

    def forward(self, hidden: torch.Tensor, log_magnitude: torch.Tensor) -> torch.Tensor:
        real_step, imaginary_step, real, imaginary = self.parts(hidden).chunk(4, dim=1)
        step, owner = self.advance(log_magnitude.detach())  # (batch, bins, frames) each
        step = step + torch.atan2(imaginary_step, real_step)
        phase, _ = locked_phases(step, owner, step.new_zeros(step.shape[0], step.shape[1], 1))
        return torch.remainder(phase + torch.atan2(imaginary, real) + math.pi, 2 * math.pi) - math.pi


class MelVAE(VAE):
    """Frame VAE. Input and output: (batch, channels, frames) of natural-log magnitudes (mel bands or STFT bins),
    then, with a phase head (features: spectrogram_phase), as many STFT phases in radians. The encoder reads the
    magnitudes alone."""

    def __init__(self, encoder: nn.Module, decoder: nn.Sequential, latent_size: int, hop: int, channels: int,
                 pad_value: Callable[[torch.Tensor], float], offset: float = -5.0, phase_head: PhaseHead | None = None):
        super().__init__()
        self.pad_value = pad_value  # the representation's silence
        self.encoder, self.decoder, self.phase_head = encoder, decoder, phase_head
        self.latent_size, self.hop, self.input_channels = latent_size, hop, channels
        self.offset = offset  # log-mels sit far below zero; centring them makes the start of training easier
        self.phase_channels = 0 if phase_head is None else channels // 2

    def encode_frames(self, x: torch.Tensor) -> Posterior:
        return split_posterior(self.encoder(x[:, : self.input_channels - self.phase_channels] - self.offset))

    def context_frames(self, probe: int = 32) -> int:
        """VAE.context_frames; with a phase head, that of the magnitudes: the head's running sum reaches every later
        frame, as synthesis method peaks' does, and restarts in each chunk as that one's does, while its angles
        read the decoder's last hidden layer, which reaches no further than the magnitudes' output does."""
        if self.phase_head is None:
            return super().context_frames(probe)
        magnitudes = MelVAE(self.encoder, self.decoder, self.latent_size, self.hop,
                            self.input_channels - self.phase_channels, self.pad_value, self.offset)
        return magnitudes.train(self.training).context_frames(probe)

    def decode_frames(self, z: torch.Tensor) -> torch.Tensor:
        if self.phase_head is None:
            return self.decoder(z) + self.offset
        *layers, output = self.decoder
        hidden = z
        for layer in layers:
            hidden = layer(hidden)  # (batch, width, frames): the last hidden layer
        magnitude = output(hidden) + self.offset
        return torch.cat([magnitude, self.phase_head(hidden, magnitude)], dim=1)


def build_mel(recipe: Recipe) -> VAE:
    """The frame model of a recipe's model section, as wide as its representation's frames."""
    config, representation = recipe.model, recipe.data.representation
    channels, phase = representation.channels, representation.phase_channels
    magnitudes = channels - phase  # what the encoder reads and the decoder's last convolution gives
    encoder, decoder = ConvEncoder(magnitudes, config), ConvDecoder(magnitudes, config)
    mel = recipe.data.mel  # the phase head is built last: the rest starts as the same model without it would
    head = PhaseHead(decoder[-1].in_channels, phase, mel.n_fft, mel.hop_length, config.causal) if phase else None
    return MelVAE(encoder, decoder, config.latent_size, config.total_stride, channels, representation.pad_value,
                  phase_head=head)


def check_mel(recipe: Recipe) -> None:
    frames = recipe.training_samples // recipe.data.representation.samples_per_step
    stride = recipe.model.total_stride
    require(frames % stride == 0, "model.strides", f"product {stride} must divide the frames per segment ({frames})")
    if recipe.model.causal:  # it streams: every piece of the way from audio to audio must run block by block
        require(recipe.data.features != "spectrogram_phase", "model.causal",
                "a phase head does not stream yet (its convolutions are causal, the streaming ends are not "
                "wired); use features: spectrogram")
        require(recipe.data.features == "spectrogram", "model.causal",
                "mel frames cannot stream (Griffin-Lim needs whole spectrograms); use features: spectrogram")
        require(recipe.synthesis.streams, "synthesis.method", "a causal frame model needs a method with a causal "
                "form and no Griffin-Lim iterations (peaks or advancing, iterations: 0)")
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
        self.encoder, self.decoder, self.offset = net.encoder, net.decoder, net.offset
        self.setup(net.latent_size, net.hop * mel.hop_length)
        self.example_frames = max(2, mel.n_fft // self.hop + 1)  # export's test blocks: longer than n_fft / 2

    def encode_padded(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(self.front(x) - self.offset)[:, : self.latent_size]

    @torch.jit.export
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.back(self.decoder(z) + self.offset)


def mel_face(net: MelVAE, recipe: Recipe) -> nn.Module:
    """What `audiovae export` scripts: a causal model streams block by block, others run whole signals."""
    if net.phase_channels:
        raise UserError("export covers frame models without a phase head; the exported inversion takes "
                        "magnitudes alone (train with features: spectrogram to export)")
    if recipe.model.causal:
        return StatefulStreaming(streaming_frames(net, recipe))
    return MelWholeSignal(net, recipe)


FAMILY = Family("mel", MelModelConfig, build_mel, ("mel", "spectrogram", "spectrogram_phase"), check_mel, mel_face)
