"""STFT, inverse STFT, log-mel and Griffin-Lim as real-valued convolutions, so that they script and export to ONNX.

ONNX has no complex numbers and no inverse STFT, so exported mel models cannot call torch.stft/istft. These
modules compute the same transforms (centred frames, periodic Hann window, reflect padding) with the DFT
as a strided convolution and its inverse as a transposed convolution. They are the export path only:
training and synthesis in Python keep audiovae.dsp.transforms (FFT-based, much faster); tests hold the two together.

    frame t covers samples [t * hop - n_fft / 2, t * hop + n_fft / 2) of the signal (reflect-padded at the ends)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from audiovae.dsp.inversion import SynthesisConfig


def dft_bases(n_fft: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Windowed analysis basis (2 * bins, 1, n_fft), synthesis basis (2 * bins, 1, n_fft), window (n_fft,).

    conv1d(x, analysis, stride=hop) gives the frames' real parts, then their imaginary parts; conv_transpose1d of
    them with synthesis overlap-adds each frame's windowed inverse DFT (Hann periodic, one-sided)."""
    bins = n_fft // 2 + 1
    n = torch.arange(n_fft, dtype=torch.float64)
    k = torch.arange(bins, dtype=torch.float64)[:, None]
    angle = 2 * math.pi * k * n / n_fft  # (bins, n_fft)
    window = torch.hann_window(n_fft, periodic=True, dtype=torch.float64)
    analysis = torch.cat([torch.cos(angle) * window, -torch.sin(angle) * window])
    weight = torch.full((bins, 1), 2.0, dtype=torch.float64)  # one-sided: every bin but DC and Nyquist twice
    weight[0] = 1.0
    if n_fft % 2 == 0:
        weight[-1] = 1.0
    synthesis = torch.cat([weight * torch.cos(angle), -weight * torch.sin(angle)]) * window / n_fft
    return analysis[:, None].float(), synthesis[:, None].float(), window.float()


class ConvSTFT(nn.Module):
    """x: (batch, time) -> real, imag: (batch, n_fft // 2 + 1, time // hop + 1), as torch.stft(center=True)."""

    def __init__(self, n_fft: int, hop_length: int):
        super().__init__()
        self.n_fft, self.hop_length, self.bins = n_fft, hop_length, n_fft // 2 + 1
        analysis, synthesis, window = dft_bases(n_fft)
        self.register_buffer("analysis", analysis, persistent=False)
        self.register_buffer("synthesis", synthesis, persistent=False)
        self.register_buffer("window_square", window.square()[None, None], persistent=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        padded = F.pad(x[:, None], (self.n_fft // 2, self.n_fft // 2), mode="reflect")
        spec = F.conv1d(padded, self.analysis, stride=self.hop_length)  # (B, 2 * bins, frames)
        return spec[:, : self.bins], spec[:, self.bins :]

    def inverse(self, real: torch.Tensor, imag: torch.Tensor, length: int) -> torch.Tensor:
        """Overlap-add with the window-square envelope divided out, as torch.istft(center=True): (B, length)."""
        y = F.conv_transpose1d(torch.cat([real, imag], 1), self.synthesis, stride=self.hop_length)
        envelope = F.conv_transpose1d(torch.ones_like(real[:1, :1]), self.window_square, stride=self.hop_length)
        start = self.n_fft // 2
        return (y / envelope.clamp_min(1e-11))[:, 0, start : start + length]


class LogMelFront(nn.Module):
    """audio (batch, 1, time) -> natural-log mel magnitudes (batch, n_mels, time // hop), as audiovae.dsp.transforms.log_mel
    with the last centred frame dropped (what prepare stores)."""

    def __init__(self, filterbank: torch.Tensor, n_fft: int, hop_length: int, log_floor: float):
        super().__init__()
        self.stft = ConvSTFT(n_fft, hop_length)
        self.register_buffer("filterbank", filterbank.T.contiguous().clone(), persistent=False)  # (n_mels, bins)
        self.log_floor, self.hop_length = log_floor, hop_length

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        real, imag = self.stft(x[:, 0])
        magnitude = (real.square() + imag.square()).clamp_min(1e-12).sqrt()
        mel = torch.matmul(self.filterbank, magnitude)
        return torch.log(mel.clamp_min(self.log_floor))[..., : x.shape[-1] // self.hop_length]


class MelInversion(nn.Module):
    """log-mel (batch, n_mels, frames) -> audio (batch, 1, frames * hop), as audiovae.dsp.transforms.griffin_lim_from_log_mel:
    the least-norm linear magnitudes (the filterbank's pseudo-inverse, clipped at 0), then the phases of
    `synthesis`'s method (the same PhaseRule module synthesis in Python runs) and its iterations of fast
    Griffin-Lim. A spectrogram model passes the identity as its filterbank.

    The same method as the Python path, on another STFT (convolutions, for ONNX): rounding differences grow
    over the iterations, so the two agree to about 1% of the peak after 32 iterations, to 1e-4 with none
    (tests/realtime/test_export_faces.py, tests/data/test_spectrogram_representation.py)."""

    def __init__(self, filterbank: torch.Tensor, n_fft: int, hop_length: int, synthesis: SynthesisConfig):
        super().__init__()
        self.stft = ConvSTFT(n_fft, hop_length)
        inverse = torch.linalg.pinv(filterbank.double().T).float()  # (bins, n_mels)
        self.register_buffer("inverse", inverse, persistent=False)
        self.phases = synthesis.phase_rule(n_fft, hop_length)
        self.iterations, self.hop_length = synthesis.iterations, hop_length
        self.momentum = synthesis.momentum / (1 + synthesis.momentum)

    def forward(self, log_mel: torch.Tensor) -> torch.Tensor:
        length = log_mel.shape[-1] * self.hop_length
        log_mel = torch.cat([log_mel, log_mel[..., -1:]], -1)  # restore the dropped last frame
        magnitude = torch.relu(torch.matmul(self.inverse, torch.exp(log_mel)))  # (B, bins, frames + 1)
        phase, under, magnitude = self.phases.start(magnitude, 0)
        real, imag = torch.cos(phase).expand_as(magnitude), torch.sin(phase).expand_as(magnitude)
        previous_real, previous_imag = torch.zeros_like(magnitude), torch.zeros_like(magnitude)
        for _ in range(self.iterations):
            rebuilt_real, rebuilt_imag = self.stft(self.stft.inverse(under * real, under * imag, length))
            real = rebuilt_real - self.momentum * previous_real
            imag = rebuilt_imag - self.momentum * previous_imag
            norm = torch.sqrt(real.square() + imag.square()) + 1e-16
            real, imag = real / norm, imag / norm
            previous_real, previous_imag = rebuilt_real, rebuilt_imag
            under = magnitude
        return self.stft.inverse(under * real, under * imag, length)[:, None]
