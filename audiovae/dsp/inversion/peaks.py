"""Synthesis method `peaks`: phases locked to the magnitudes' peaks, a phase-locked vocoder without loops
(features: spectrogram until 0.3, no Griffin-Lim iterations after it)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from audiovae.dsp.inversion.base import PhaseAdvance, PhaseRule, SynthesisMethod


def peak_locked_phase(log_magnitude: torch.Tensor, n_fft: int, hop_length: int, reach: int = 2) -> torch.Tensor:
    """Phases (..., bins, frames) for log magnitudes (..., bins, frames), from their peaks alone: a phase-locked
    vocoder (Laroche and Dolson 1999) without loops. Each bin belongs to the loudest bin within `reach` of it
    (a Hann window's main lobe is 2 bins either side), that peak's frequency is refined by a parabola through
    its log magnitude and its two neighbours, each bin's phase advances by that frequency times the hop from
    frame to frame, and the bins of a lobe take the peak's phase, minus pi per bin away from it (the phase
    relation of a steady sinusoid's lobe in frames that start at the window's edge). On a model's magnitudes,
    which belong to no signal, Griffin-Lim's iterations undo the harmonics' continuity that this keeps
    (docs/quality.md). The first frame starts at 0; scriptable, for the export."""
    bins, frames = log_magnitude.shape[-2], log_magnitude.shape[-1]
    x = log_magnitude.reshape(-1, bins, frames).transpose(1, 2)  # (batch, frames, bins)
    frequency, owner = peak_frequency(x, reach)
    step = torch.remainder(frequency * hop_length, n_fft) * (2 * math.pi / n_fft)
    integrated = torch.cumsum(step, 1) - step[:, :1]
    away = torch.arange(bins, device=x.device)[None, None] - owner
    phase = torch.gather(integrated, -1, owner) - math.pi * away.to(x.dtype)
    return phase.transpose(1, 2).reshape(log_magnitude.shape)


def peak_frequency(x: torch.Tensor, reach: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """Log magnitudes x (batch, frames, bins) -> each bin's peak frequency in bins (batch, frames, bins) and the
    peak's bin, its owner (long): the loudest bin within `reach`, refined by a parabola (peak_locked_phase)."""
    offset, owner = peak_offset(x, reach)
    return owner.to(x.dtype) + offset, owner


def peak_offset(x: torch.Tensor, reach: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """peak_frequency in two parts: each bin's peak's parabola vertex less the peak's bin (batch, frames, bins), in
    [-0.5, 0.5] bins, and the peak's bin (long). Apart, the two keep the precision that their float32 sum loses
    (a frequency near bin 256 rounds to 3e-5 bins)."""
    batch, frames, bins = x.shape[0], x.shape[1], x.shape[2]
    padded = F.pad(x.reshape(batch * frames, 1, bins), (reach, reach), value=-1e9)
    _, owner = F.max_pool1d(padded, 2 * reach + 1, 1, return_indices=True)
    owner = (owner - reach).clamp(0, bins - 1).reshape(batch, frames, bins)
    below = torch.cat([x[..., :1], x[..., :-1]], -1)
    above = torch.cat([x[..., 1:], x[..., -1:]], -1)
    curvature = below - 2 * x + above
    offset = (0.5 * (below - above) / curvature.clamp(max=-1e-6)).clamp(-0.5, 0.5)
    offset = torch.where(curvature < -1e-6, offset, torch.zeros_like(offset))  # a parabola's vertex, in bins
    return torch.gather(offset, -1, owner), owner


class PeakLockedPhases(PhaseRule):
    """peak_locked_phase of the magnitudes' logs. Each chunk integrates from its own first frame."""

    def forward(self, magnitude: torch.Tensor, first_frame: int) -> torch.Tensor:
        return peak_locked_phase(torch.log(magnitude.clamp_min(1e-12)), self.n_fft, self.hop_length)


class PeakAdvance(PhaseAdvance):
    """The causal form: each bin advances by its peak's frequency times the hop from the previous frame and locks
    to its peak, frame by frame (peak_locked_phase differs only by each bin's starting phase).

    The step is float64, its whole bins times the hop taken modulo n_fft in integers: a float32 step from a float32
    frequency is off by up to 2e-5 rad a frame, which the running phases add up (6e-5 of full scale after 10 s);
    this way only the magnitudes' own rounding reaches the phases."""

    def forward(self, log_magnitude: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        offset, owner = peak_offset(log_magnitude.transpose(1, 2))
        cycles = torch.remainder(owner * self.hop_length, self.n_fft).double() + offset.double() * self.hop_length
        return (cycles * (2 * math.pi / self.n_fft)).transpose(1, 2), owner.transpose(1, 2)


METHOD = SynthesisMethod("peaks", PeakLockedPhases, iterations=0,
                         summary="phases locked to the magnitudes' peaks (a phase-locked vocoder)", advance=PeakAdvance)
