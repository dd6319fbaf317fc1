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
    (a frequency near bin 256 rounds to 3e-5 bins). Few, vectorized operations (the live model runs this on every
    block; offline synthesis on a 10-s sound's 1724 x 513 at 44.1 kHz): no torch.where, which on a CPU takes 30
    times a multiplication's time (docs/benchmarks.md, round 16), and the neighbours come from one concatenation."""
    owner = window_argmax(x, reach)
    edges = edge_padded(x, 1)
    below, above = edges[..., :-2], edges[..., 2:]  # each bin's neighbours, the end bins repeated
    curvature = torch.sub(below, x, alpha=2) + above  # below - 2 x + above, rounded alike
    offset = (0.5 * (below - above) / curvature.clamp(max=-1e-6)).clamp(-0.5, 0.5)
    offset = offset * (curvature < -1e-6).to(x.dtype)  # a parabola's vertex, in bins (0 where no parabola opens down)
    return torch.gather(offset, -1, owner), owner


def edge_padded(x: torch.Tensor, count: int) -> torch.Tensor:
    """x (..., bins) with its first and last values repeated `count` times before and after: F.pad's replicate
    mode, without its reshape to (batch, channels, length) and in one concatenation."""
    shape = list(x.shape[:-1])  # a list, as TorchScript and ONNX export take it
    shape.append(count)
    return torch.cat([x[..., :1].expand(shape), x, x[..., -1:].expand(shape)], -1)


def window_argmax(x: torch.Tensor, reach: int) -> torch.Tensor:
    """For x (..., bins), the index (long) of the largest value within `reach` bins of each bin, the first where
    several tie: a max-pool's indices, in two thirds of its time on a CPU (4.2 against 6.1 ms on 1724 x 513 at 2
    threads). The largest of each run of 1, 2, 4, ... values comes from two halves' (the later half's only where
    strictly larger), and the window's from two runs that overlap, so ties still go to the first. Positions within
    a run are bytes: windows of at most 255 bins."""
    bins, width = x.shape[-1], 2 * reach + 1
    if not 0 <= reach <= 127:
        raise ValueError(f"reach must be in [0, 127], not {reach}")
    value = F.pad(x, (reach, reach), value=-1e9)
    index = torch.zeros(value.shape, dtype=torch.uint8, device=x.device)  # within each run, from its start
    size = 1
    while 2 * size <= width:
        later = value[..., size:] > value[..., :-size]
        index = index[..., :-size] + later * (index[..., size:] + size - index[..., :-size])  # exact mod 256
        value = torch.maximum(value[..., :-size], value[..., size:])
        size *= 2
    shift = width - size
    if shift:
        later = value[..., shift : shift + bins] > value[..., :bins]
        index = index[..., :bins] + later * (index[..., shift : shift + bins] + shift - index[..., :bins])
    owner = index[..., :bins].long() + (torch.arange(bins, device=x.device) - reach)
    owner[..., :reach].clamp_(min=0)  # only padding can win there, and only over values of -1e9 or less
    owner[..., bins - reach :].clamp_(max=bins - 1)
    return owner


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
