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
    (a frequency near bin 256 rounds to 3e-5 bins). Few operations (the live model runs this on every block):
    the max-pool treats the frames as channels, and the neighbours come from one edge-replicating pad."""
    bins = x.shape[-1]
    _, owner = F.max_pool1d(F.pad(x, (reach, reach), value=-1e9), 2 * reach + 1, 1, return_indices=True)
    owner = (owner - reach).clamp(0, bins - 1)
    edges = F.pad(x, (1, 1), mode="replicate")
    below, above = edges[..., :-2], edges[..., 2:]  # each bin's neighbours, the end bins repeated
    curvature = torch.sub(below, x, alpha=2) + above  # below - 2 x + above, rounded alike
    offset = (0.5 * (below - above) / curvature.clamp(max=-1e-6)).clamp(-0.5, 0.5)
    offset = torch.where(curvature < -1e-6, offset, 0.0)  # a parabola's vertex, in bins
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

    def __init__(self, n_fft: int, hop_length: int, noise_level: float = 0.0):
        super().__init__(n_fft, hop_length, noise_level)
        # each bin's whole cycles per hop, modulo n_fft (an integer buffer: a model's .to(dtype) leaves it exact)
        self.register_buffer("cycles", torch.remainder(torch.arange(n_fft // 2 + 1) * hop_length, n_fft),
                             persistent=False)
        self.register_buffer("bin_index", torch.arange(n_fft // 2 + 1), persistent=False)

    def forward(self, log_magnitude: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        step, owner = self._step(log_magnitude.transpose(1, 2))
        return step.transpose(1, 2), owner.transpose(1, 2)

    def _step(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Log magnitudes (batch, frames, bins) -> step (float64) and owner, both (batch, frames, bins)."""
        offset, owner = peak_offset(x)
        step = self.cycles[owner].double() + offset.double() * self.hop_length
        return step * (2 * math.pi / self.n_fft), owner

    def running(self, log_magnitude: torch.Tensor, start: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """PhaseAdvance.running (locked_phases over forward's step and owner) in fewer operations: the frames
        stay the middle axis throughout (transposes are views), and a bin's distance to its peak comes from a
        stored bin index. The live model runs this on every block; tests hold it to the general form."""
        step, owner = self._step(log_magnitude.transpose(1, 2))  # (batch, frames, bins)
        running = torch.remainder(start.transpose(1, 2).double() + torch.cumsum(step, 1), 2 * math.pi)
        away = (self.bin_index - owner).to(start.dtype)
        phase = torch.gather(running, 2, owner).to(start.dtype) - math.pi * away
        end = running[:, -1:].transpose(1, 2).to(start.dtype)
        return phase.transpose(1, 2), torch.exp(log_magnitude), end


METHOD = SynthesisMethod("peaks", PeakLockedPhases, iterations=0,
                         summary="phases locked to the magnitudes' peaks (a phase-locked vocoder)", advance=PeakAdvance)
