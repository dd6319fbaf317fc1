"""The frame family's ends for StreamingVAE: the causal STFT in front of the encoder, running phases and the
overlap-add inverse after the decoder, each with its state in the same flat list as the convolutions'.

    analysis    CachedConv1d of the windowed DFT basis: kernel n_fft, stride hop, state the last n_fft - hop
                input samples (frame t ends at sample (t + 1) * hop; zeros before the stream's start)
    phases      the synthesis method's causal form (PhaseAdvance) added to a running phase per bin, state
                (bins, 1), wrapped to [0, 2 pi) at every call so a stream of hours stays as exact as a second
    inverse     OverlapAddConvTranspose1d of the inverse DFT basis: state the n_fft - hop samples of tail

Matrix products and convolutions only (ONNX has no inverse STFT). The stream equals
audiovae.dsp.causal_stft's offline pass n_fft - hop samples later: the latency (audiovae.models.mel).
"""

from __future__ import annotations

import torch
from torch import nn

from audiovae.dsp.causal_stft import overlap_gain
from audiovae.dsp.inversion import PhaseAdvance
from audiovae.nn.spectral import dft_bases
from audiovae.nn.streaming import (
    CachedConv1d,
    OverlapAddConvTranspose1d,
    Stateless,
    StreamEnds,
    StreamingSequential,
)


class LogMagnitude(nn.Module):
    """Real and imaginary parts (B, 2 * bins, n) -> natural-log magnitudes less `offset` (B, bins, n)."""

    def __init__(self, bins: int, log_floor: float, offset: float):
        super().__init__()
        self.bins, self.log_floor, self.offset = bins, log_floor, offset

    def forward(self, spectrum: torch.Tensor) -> torch.Tensor:
        real, imag = spectrum[:, : self.bins], spectrum[:, self.bins :]
        magnitude = (real.square() + imag.square()).clamp_min(1e-12).sqrt()
        return torch.log(magnitude.clamp_min(self.log_floor)) - self.offset


class RunningPhases(nn.Module):
    """Decoder output (B, bins, n) (log magnitudes less `offset`) -> real and imaginary parts (B, 2 * bins, n),
    under phases that continue from the previous block: state (B, bins, 1), the running phase per bin."""

    def __init__(self, advance: PhaseAdvance, offset: float, index: int):
        super().__init__()
        self.advance, self.offset, self.index = advance, offset, index

    def forward(self, x: torch.Tensor, states: list[torch.Tensor]) -> torch.Tensor:
        phase, magnitude, states[self.index] = self.advance.running(x + self.offset, states[self.index])
        return torch.cat([magnitude * torch.cos(phase), magnitude * torch.sin(phase)], 1)


class SpectralEnds(StreamEnds):
    """The ends of a causal frame model over log-STFT frames: the causal STFT in front, phases and inverse after.

    offset: the model's centring of log magnitudes (MelVAE.offset); advance: the synthesis method's causal form.
    """

    def __init__(self, n_fft: int, hop_length: int, log_floor: float, offset: float, advance: PhaseAdvance):
        self.n_fft, self.samples_per_step, self.log_floor, self.offset = n_fft, hop_length, log_floor, offset
        self.advance, self.bins = advance, n_fft // 2 + 1
        self.latency_samples = n_fft - hop_length

    def analysis(self, shapes: list[list[int]]) -> nn.Module:
        analysis, _, _ = dft_bases(self.n_fft)
        shapes.append([1, self.n_fft - self.samples_per_step])
        dft = CachedConv1d(analysis, None, self.samples_per_step, 1, self.n_fft - self.samples_per_step,
                           len(shapes) - 1)
        return StreamingSequential([dft, Stateless(LogMagnitude(self.bins, self.log_floor, self.offset))])

    def synthesis(self, shapes: list[list[int]]) -> nn.Module:
        _, synthesis, _ = dft_bases(self.n_fft)
        shapes.append([self.bins, 1])
        phases = RunningPhases(self.advance, self.offset, len(shapes) - 1)
        overlap = self.n_fft - self.samples_per_step
        shapes.append([1, overlap])  # conv_transpose1d's weight is (in = 2 * bins, out = 1, n_fft)
        weight = synthesis / overlap_gain(self.n_fft, self.samples_per_step)
        return StreamingSequential([phases, OverlapAddConvTranspose1d(weight, None, self.samples_per_step, overlap,
                                                                      len(shapes) - 1)])
