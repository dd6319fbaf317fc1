"""What a synthesis method is: a phase rule (the phases an inverse STFT starts from under magnitudes alone),
as a scriptable module so that synthesis in Python and the export (audiovae.nn.spectral) run the same code."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn


class PhaseRule(nn.Module):
    """magnitude (batch, bins, frames), first_frame -> phases broadcastable to it. first_frame: the index of the
    first frame in the whole sound, when the magnitudes are a chunk of one (chunked synthesis; 0 in the export).

    Synthesis starts from `start`: the phases, the magnitudes to put under them at the start, and those that
    Griffin-Lim's iterations, if any, go on under (all three the given magnitudes, unless a rule scales some:
    one that gives bins phases independent from frame to frame scales them up by what the overlap-add cancels
    at the start, and by the recipe's noise_level throughout).

    noise_level: nats added to the log magnitudes of the bins a rule gives noise phases (SynthesisMethod.noise:
    rules that have such bins; 0 for the others)."""

    def __init__(self, n_fft: int, hop_length: int, noise_level: float = 0.0):
        super().__init__()
        self.n_fft, self.hop_length, self.noise_level = n_fft, hop_length, noise_level

    def forward(self, magnitude: torch.Tensor, first_frame: int) -> torch.Tensor:
        raise NotImplementedError

    def start(self, magnitude: torch.Tensor, first_frame: int
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(phases broadcastable to magnitude, the magnitudes to start under them and those to iterate under,
        both (batch, bins, frames))."""
        return self.forward(magnitude, first_frame), magnitude, magnitude


class PhaseAdvance(nn.Module):
    """A phase rule in causal form, for a model that streams: from each frame alone, how far each bin's running
    phase advances since the previous frame, and which bin's running phase it takes (locked_phases adds it up).

    log_magnitude (batch, bins, frames) -> step (batch, bins, frames) in radians (float64 where rounding would
    otherwise reach it: the running phases add up every frame's error), owner (batch, bins, frames) long.
    """

    def __init__(self, n_fft: int, hop_length: int, noise_level: float = 0.0):
        super().__init__()
        self.n_fft, self.hop_length, self.noise_level = n_fft, hop_length, noise_level  # as PhaseRule's

    def forward(self, log_magnitude: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def running(self, log_magnitude: torch.Tensor, start: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The frames' phases (batch, bins, frames), running on from `start` (batch, bins, 1) by locked_phases,
        the magnitudes to put under them (batch, bins, frames; exp(log_magnitude) unless the method scales
        some, as PhaseRule.start) and the running phase after the last frame (batch, bins, 1)."""
        step, owner = self.forward(log_magnitude)
        phase, end = locked_phases(step, owner, start)
        return phase, torch.exp(log_magnitude), end


def locked_phases(step: torch.Tensor, owner: torch.Tensor, start: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Running phases from a PhaseAdvance's step and owner (batch, bins, frames), continuing from `start`
    (batch, bins, 1): bin k of frame t takes its owner's running phase (start + the owner's steps up to and
    including frame t), minus pi per bin away from it. Returns the phases (batch, bins, frames) and the running
    phase after the last frame (batch, bins, 1), both in start's dtype.

    The sums run in float64 and come back wrapped to [0, 2 pi): a float32 running sum loses about 1e-3 rad
    after 10 s, while a wrapped state rounds by at most 2 pi * 2**-24 per call at any age of the stream."""
    running = torch.remainder(start.double() + torch.cumsum(step.double(), -1), 2 * math.pi)
    away = torch.arange(step.shape[1], device=step.device)[None, :, None] - owner
    phase = torch.gather(running, 1, owner).to(start.dtype) - math.pi * away.to(start.dtype)
    return phase, running[..., -1:].to(start.dtype)


@dataclass(frozen=True)
class SynthesisMethod:
    """A registry entry of audiovae.dsp.inversion.SYNTHESIS_METHODS.

    phases: the PhaseRule class, built with (n_fft, hop_length); iterations: the fast Griffin-Lim iterations
    after the start phases when a recipe names the method without `iterations`; summary: one line for docs and
    errors; advance: its causal form (a PhaseAdvance class, built with (n_fft, hop_length)), None where the
    method cannot run frame by frame (a causal frame model needs one, audiovae.models.mel); noise: whether it
    gives some bins noise phases (and so takes a recipe's synthesis.noise_level)."""

    name: str
    phases: type[PhaseRule]
    iterations: int
    summary: str
    advance: type[PhaseAdvance] | None = None
    noise: bool = False
