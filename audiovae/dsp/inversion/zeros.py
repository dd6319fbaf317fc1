"""Synthesis method `zeros`: Griffin-Lim from all-zero phases (features: mel until 0.3, 32 iterations)."""

from __future__ import annotations

import torch

from audiovae.dsp.inversion.base import PhaseRule, SynthesisMethod


class ZeroPhases(PhaseRule):
    """Every bin of every frame starts at phase 0: each frame starts alike, a buzz at the frame rate that few
    iterations do not remove."""

    def forward(self, magnitude: torch.Tensor, first_frame: int) -> torch.Tensor:
        return torch.zeros_like(magnitude)


METHOD = SynthesisMethod("zeros", ZeroPhases, iterations=32,
                         summary="Griffin-Lim from all-zero phases (torchaudio's start)")
