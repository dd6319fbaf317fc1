"""The frame family's ends for StreamingVAE: the causal STFT in front of the encoder, running phases and the
overlap-add inverse after the decoder, each with its state in the same flat list as the convolutions'.

    analysis    CausalLogSpectrum: log magnitudes of windowed frames of n_fft every hop; state the last n_fft - hop
                input samples (frame t ends at sample (t + 1) * hop; zeros before the stream's start)
    synthesis   CausalSynthesis: the synthesis method's causal form (PhaseAdvance) added to a running phase per bin,
                state (bins, 1), wrapped to [0, 2 pi) at every call so a stream of hours stays as exact as a second;
                then each frame's windowed inverse DFT, overlap-added, state the n_fft - hop samples of tail

TorchScript runs the FFT (few operations: a 512-sample block at 44.1 kHz spends its time on the number of
operations, not on arithmetic); the ONNX export, a trace, runs matrix products only (ONNX opset 17 has no inverse
STFT), the DFTs factored in two (audiovae.nn.factored_dft: the dense DFT basis was 40% of a 44.1-kHz block). Both
equal audiovae.dsp.causal_stft's offline pass n_fft - hop samples later: the latency (audiovae.models.mel).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from audiovae.dsp.causal_stft import overlap_gain
from audiovae.dsp.inversion import PhaseAdvance
from audiovae.nn.factored_dft import FactoredInverseDFT, FactoredRealDFT
from audiovae.nn.streaming import StreamEnds


class CausalLogSpectrum(nn.Module):
    """Audio (B, 1, n * hop) -> natural-log magnitudes less `offset` (B, bins, n) of the Hann-windowed frames that
    end at each hop; state (B, 1, n_fft - hop), the input before the block (the frames reach that far back).

    Two forms of the same transform. TorchScript (and eager PyTorch) frame the block as a strided view and take
    torch.fft.rfft: a handful of operations, where a block's time goes to the number of operations rather than
    to arithmetic. The ONNX export (a trace) frames by slices and takes the DFT as two small matrix products
    (audiovae.nn.factored_dft): opset 17 has no real FFT that torch's exporter writes. Both are held to the
    offline pass (tests/realtime/test_live_frames.py)."""

    def __init__(self, n_fft: int, hop_length: int, log_floor: float, offset: float, index: int):
        super().__init__()
        self.n_fft, self.hop, self.hops, self.index = n_fft, hop_length, n_fft // hop_length, index
        self.bins, self.log_floor, self.offset = n_fft // 2 + 1, log_floor, offset
        self.register_buffer("window", torch.hann_window(n_fft, periodic=True))
        self.dft = FactoredRealDFT(n_fft)

    def forward(self, x: torch.Tensor, states: list[torch.Tensor]) -> torch.Tensor:
        x = torch.cat([states[self.index], x], -1)  # (B, 1, (n + hops - 1) * hop)
        states[self.index] = x[..., -(self.hops - 1) * self.hop :]
        if not torch.jit.is_tracing():
            frames = x.unfold(-1, self.n_fft, self.hop) * self.window  # (B, 1, n, n_fft)
            magnitude = torch.fft.rfft(frames).abs().clamp_min(self.log_floor)
            return (torch.log(magnitude) - self.offset).squeeze(1).transpose(1, 2)
        chunks = x.reshape(x.shape[0], -1, self.hop)  # (B, n + hops - 1, hop)
        frames_per_block = chunks.shape[1] - (self.hops - 1)
        # frame t = chunks t .. t + hops - 1
        pieces = [chunks.narrow(1, j, frames_per_block) for j in range(self.hops)]
        real, imag = self.dft(torch.cat(pieces, -1) * self.window).split(self.bins, -1)  # (B, n, bins) each
        magnitude = (real.square() + imag.square()).clamp_min(1e-12).sqrt()
        return (torch.log(magnitude.clamp_min(self.log_floor)) - self.offset).transpose(1, 2)


class CausalSynthesis(nn.Module):
    """Decoder output (B, bins, n) (log magnitudes less `offset`) -> audio (B, 1, n * hop): phases that continue
    from the previous block (state (B, bins, 1), the running phase per bin), each frame's windowed inverse DFT laid
    over the n_fft samples that end at its hop and divided by the steady window-square sum (state (B, 1,
    n_fft - hop), the tail that the next block's frames add to).

    As CausalLogSpectrum: torch.fft.irfft and one overlap-add (fold) in TorchScript and eager PyTorch, matrix
    products and pads in the ONNX export (opset 17 has neither an inverse FFT nor Col2Im)."""

    def __init__(self, advance: PhaseAdvance, n_fft: int, hop_length: int, offset: float, phase_index: int,
                 tail_index: int):
        super().__init__()
        self.advance, self.offset, self.phase_index, self.tail_index = advance, offset, phase_index, tail_index
        self.n_fft, self.hop, self.hops = n_fft, hop_length, n_fft // hop_length
        window = torch.hann_window(n_fft, periodic=True, dtype=torch.float64) / overlap_gain(n_fft, hop_length)
        self.register_buffer("window", window.float())
        self.inverse = FactoredInverseDFT(n_fft)

    def forward(self, x: torch.Tensor, states: list[torch.Tensor]) -> torch.Tensor:
        phase, magnitude, states[self.phase_index] = self.advance.running(x + self.offset, states[self.phase_index])
        n, overlap = x.shape[-1], (self.hops - 1) * self.hop
        if not torch.jit.is_tracing():
            frames = torch.fft.irfft(torch.polar(magnitude, phase), self.n_fft, 1) * self.window[:, None]
            length = (n + self.hops - 1) * self.hop  # frame t over [t * hop, t * hop + n_fft) of the block's span
            y = F.fold(frames, [1, length], [1, self.n_fft], stride=[1, self.hop]).reshape(x.shape[0], 1, length)
        else:
            spectrum = torch.cat([magnitude * torch.cos(phase), magnitude * torch.sin(phase)], 1)
            frames = self.inverse(spectrum.transpose(1, 2)) * self.window  # (B, n, n_fft)
            pieces = frames.reshape(frames.shape[0], n, self.hops, self.hop).unbind(2)  # (B, n, hop) each
            last = self.hops - 1
            summed = F.pad(pieces[0], (0, 0, 0, last))  # (B, n + hops - 1, hop)
            for j in range(1, self.hops):  # hop j of frame t lands on hop t + j
                summed = summed + F.pad(pieces[j], (0, 0, j, last - j))
            y = summed.reshape(summed.shape[0], 1, -1)
        y = y + F.pad(states[self.tail_index], (0, n * self.hop))  # the previous block's tail on this one's head
        states[self.tail_index] = y[..., -overlap:]
        return y[..., :-overlap]


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
        return CausalLogSpectrum(self.n_fft, self.samples_per_step, self.log_floor, self.offset, len(shapes) - 1)

    def synthesis(self, shapes: list[list[int]]) -> nn.Module:
        shapes.extend([[self.bins, 1], [1, self.n_fft - self.samples_per_step]])
        return CausalSynthesis(self.advance, self.n_fft, self.samples_per_step, self.offset, len(shapes) - 2,
                               len(shapes) - 1)
