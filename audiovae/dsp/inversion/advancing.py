"""Synthesis method `advancing`: Griffin-Lim from phases that advance at each bin's centre frequency."""

from __future__ import annotations

import math

import torch

from audiovae.dsp.inversion.base import PhaseAdvance, PhaseRule, SynthesisMethod


def advancing_phase(bins: int, frames: int, n_fft: int, hop_length: int, device: torch.device,
                    first: int = 0) -> torch.Tensor:
    """(bins, frames): the phase of a steady sinusoid at each bin's centre frequency, 2 pi k hop / n_fft more
    each frame, for frames first, first + 1, ... of a sound (so that chunks of it start where the whole would).
    A Griffin-Lim start that continues from frame to frame, where all-zero phases start every frame alike (a
    buzz at the frame rate that few iterations do not remove). Computed in integers modulo n_fft, so exact at
    any length; scriptable, for the export."""
    k = torch.arange(bins, device=device)[:, None]
    t = torch.arange(first, first + frames, device=device)
    return torch.remainder(k * hop_length * t, n_fft).float() * (2 * math.pi / n_fft)


class AdvancingPhases(PhaseRule):
    """advancing_phase under the magnitudes, counted from `first_frame`."""

    def forward(self, magnitude: torch.Tensor, first_frame: int) -> torch.Tensor:
        return advancing_phase(magnitude.shape[-2], magnitude.shape[-1], self.n_fft, self.hop_length,
                               magnitude.device, first_frame)


class CentreAdvance(PhaseAdvance):
    """The causal form: every bin advances by its centre frequency times the hop and keeps its own phase."""

    def forward(self, log_magnitude: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        step = advancing_phase(log_magnitude.shape[1], 2, self.n_fft, self.hop_length, log_magnitude.device)
        step = (step[:, 1:] - step[:, :1]).to(log_magnitude.dtype)  # (bins, 1): frame 1's phase less frame 0's
        owner = torch.arange(log_magnitude.shape[1], device=log_magnitude.device)[:, None]
        return step.expand_as(log_magnitude), owner.expand(log_magnitude.shape)


METHOD = SynthesisMethod("advancing", AdvancingPhases, iterations=8,
                         summary="Griffin-Lim from phases advancing at the bins' centre frequencies",
                         advance=CentreAdvance)
