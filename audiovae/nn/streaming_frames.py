"""The frame family's ends for StreamingVAE: the causal STFT in front of the encoder, running phases and the
overlap-add inverse after the decoder, each with its state in the same flat list as the convolutions'.

    analysis    CausalFrames: windowed frames of n_fft every hop, their real DFT; state the last n_fft - hop input
                samples (frame t ends at sample (t + 1) * hop; zeros before the stream's start)
    phases      the synthesis method's causal form (PhaseAdvance) added to a running phase per bin, state
                (bins, 1), wrapped to [0, 2 pi) at every call so a stream of hours stays as exact as a second
    inverse     OverlapAddFrames: each frame's windowed inverse DFT, overlap-added; state the n_fft - hop samples
                of tail

Matrix products only (ONNX has no inverse STFT), the DFTs factored in two (audiovae.nn.factored_dft: the dense
DFT basis was 40% of a 44.1-kHz block). The stream equals audiovae.dsp.causal_stft's offline pass n_fft - hop
samples later: the latency (audiovae.models.mel).
"""

from __future__ import annotations

import torch
from torch import nn

from audiovae.dsp.causal_stft import overlap_gain
from audiovae.dsp.inversion import PhaseAdvance
from audiovae.nn.factored_dft import FactoredInverseDFT, FactoredRealDFT
from audiovae.nn.streaming import Stateless, StreamEnds, StreamingSequential


class CausalFrames(nn.Module):
    """Audio (B, 1, n * hop) -> real and imaginary parts (B, 2 * bins, n) of the Hann-windowed frames that end at
    each hop; state (B, 1, n_fft - hop), the input before the block (the frames reach that far back)."""

    def __init__(self, n_fft: int, hop_length: int, index: int):
        super().__init__()
        self.hop, self.hops, self.index = hop_length, n_fft // hop_length, index  # n_fft: `hops` hops exactly
        self.register_buffer("window", torch.hann_window(n_fft, periodic=True))
        self.dft = FactoredRealDFT(n_fft)

    def forward(self, x: torch.Tensor, states: list[torch.Tensor]) -> torch.Tensor:
        x = torch.cat([states[self.index], x], -1)  # (B, 1, (n + hops - 1) * hop)
        states[self.index] = x[..., -(self.hops - 1) * self.hop :]
        chunks = x.reshape(x.shape[0], -1, self.hop)  # (B, n + hops - 1, hop)
        frames_per_block = chunks.shape[1] - (self.hops - 1)
        # frame t = chunks t .. t + hops - 1
        pieces = [chunks.narrow(1, j, frames_per_block) for j in range(self.hops)]
        frames = torch.cat(pieces, -1) * self.window  # (B, n, n_fft)
        return self.dft(frames).transpose(1, 2)


class OverlapAddFrames(nn.Module):
    """Real and imaginary parts (B, 2 * bins, n) -> audio (B, 1, n * hop): each frame's windowed inverse DFT laid
    over the n_fft samples that end at its hop, divided by the steady window-square sum; state (B, 1, n_fft - hop),
    the tail that the next block's frames add to."""

    def __init__(self, n_fft: int, hop_length: int, index: int):
        super().__init__()
        self.hop, self.hops, self.index = hop_length, n_fft // hop_length, index
        window = torch.hann_window(n_fft, periodic=True, dtype=torch.float64) / overlap_gain(n_fft, hop_length)
        self.register_buffer("window", window.float())
        self.inverse = FactoredInverseDFT(n_fft)

    def forward(self, spectrum: torch.Tensor, states: list[torch.Tensor]) -> torch.Tensor:
        frames = self.inverse(spectrum.transpose(1, 2)) * self.window  # (B, n, n_fft)
        pieces = frames.reshape(frames.shape[0], frames.shape[1], self.hops, self.hop).unbind(2)  # (B, n, hop) each
        last = self.hops - 1
        summed = torch.nn.functional.pad(pieces[0], (0, 0, 0, last))  # (B, n + hops - 1, hop)
        for j in range(1, self.hops):  # hop j of frame t lands on hop t + j
            summed = summed + torch.nn.functional.pad(pieces[j], (0, 0, j, last - j))
        y = summed.reshape(summed.shape[0], 1, -1)
        overlap = last * self.hop
        y = torch.cat([y[..., :overlap] + states[self.index], y[..., overlap:]], -1)
        states[self.index] = y[..., -overlap:]
        return y[..., :-overlap]


class LogMagnitude(nn.Module):
    """Real and imaginary parts (B, 2 * bins, n) -> natural-log magnitudes less `offset` (B, bins, n)."""

    def __init__(self, bins: int, log_floor: float, offset: float):
        super().__init__()
        self.bins, self.log_floor, self.offset = bins, log_floor, offset

    def forward(self, spectrum: torch.Tensor) -> torch.Tensor:
        real, imag = spectrum.split(self.bins, 1)
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
        shapes.append([1, self.n_fft - self.samples_per_step])
        frames = CausalFrames(self.n_fft, self.samples_per_step, len(shapes) - 1)
        return StreamingSequential([frames, Stateless(LogMagnitude(self.bins, self.log_floor, self.offset))])

    def synthesis(self, shapes: list[list[int]]) -> nn.Module:
        shapes.append([self.bins, 1])
        phases = RunningPhases(self.advance, self.offset, len(shapes) - 1)
        shapes.append([1, self.n_fft - self.samples_per_step])
        return StreamingSequential([phases, OverlapAddFrames(self.n_fft, self.samples_per_step, len(shapes) - 1)])
