"""A decoder that runs at the latent frame rate and makes the waveform with an inverse STFT (as Vocos does).

Every convolution sees one step per latent frame; the last layer predicts, per frame, a log magnitude and
a phase for each of n_fft // 2 + 1 bins, and overlap-add of Hann-windowed frames (n_fft = 4 hops) makes
the waveform. Neighbouring frames overlap by three quarters, so nothing in the output repeats once per
frame the way an upsampling stack's seams can.

    latent frames     f-1        f        f+1
    windows        |~~~~~~~~~~~~~~|
                        |~~~~~~~~~~~~~~|        one STFT frame per latent frame,
                             |~~~~~~~~~~~~~~|   centred on its first sample
"""

from __future__ import annotations

import math

import torch
from torch import nn

from audiovae.nn.blocks import activation, residual_stack, wn_conv1d

PHASES = ("absolute", "advancing")
LOG_MAGNITUDE_CEILING = 6.0  # exp(6) ~ 400: keeps an untrained head from producing inf


class ISTFTHead(nn.Module):
    """(batch, channels, frames) -> (batch, 1, frames * hop).

    phase 'absolute': the network predicts each frame's phases. 'advancing': it predicts the deviation from
    a stationary sinusoid at the bin's centre frequency, whose phase advances by 2 pi k hop / n_fft per
    frame (k pi / 2 for hop = n_fft / 4, so the term repeats every 4 frames and decoding in chunks that
    start at multiples of 4 frames is unchanged). A constant prediction then makes continuous sinusoids
    instead of a signal that restarts every hop (a comb at multiples of the frame rate); but those
    sinusoids sit at the bin centres: an undertrained decoder's comb moves to sample_rate / n_fft (a
    quarter of the frame rate); it does not go away.
    """

    def __init__(self, channels: int, hop: int, n_fft: int, phase: str = "absolute"):
        super().__init__()
        if phase not in PHASES:
            raise ValueError(f"unknown phase {phase!r}")
        self.hop, self.n_fft, self.phase = hop, n_fft, phase
        self.project = wn_conv1d(channels, n_fft + 2, 1)  # (n_fft // 2 + 1) log magnitudes and phases
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        k = torch.arange(n_fft // 2 + 1, dtype=torch.float64)
        self.register_buffer("advance", (2 * torch.pi * k * hop / n_fft).float()[:, None], persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        log_magnitude, phase = self.project(x).float().chunk(2, dim=1)  # (B, bins, frames) each
        if self.phase == "advancing":
            frames = torch.arange(x.shape[-1], device=x.device, dtype=torch.float32)
            cycle = self.n_fft // math.gcd(self.n_fft, self.hop)  # frames after which every advance is 2 pi k
            phase = phase + torch.remainder(self.advance * torch.remainder(frames, cycle), 2 * torch.pi)
        spectrum = torch.polar(log_magnitude.clamp(max=LOG_MAGNITUDE_CEILING).exp(), phase)
        frames = x.shape[-1]
        wave = torch.istft(spectrum, self.n_fft, self.hop, window=self.window, center=True,
                           length=frames * self.hop)
        return wave[:, None]


class ISTFTDecoder(nn.Sequential):
    """(batch, latent_size, frames) -> (batch, 1, frames * hop): residual units at the frame rate, then ISTFTHead.

    blocks: residual stacks of `layers` units each (dilations 1, 3, 9, ...).
    """

    def __init__(self, latent_size: int, channels: int, hop: int, blocks: int, layers: int, kernel_size: int,
                 act: str, phase: str = "absolute"):
        units = [unit for _ in range(blocks) for unit in residual_stack(channels, layers, kernel_size, act)]
        super().__init__(wn_conv1d(latent_size, channels, kernel_size), *units, activation(act, channels),
                         ISTFTHead(channels, hop, 4 * hop, phase))
