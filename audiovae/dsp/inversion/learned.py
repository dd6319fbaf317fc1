"""Synthesis method `learned`: the phases the model's own phase head predicts (features: spectrogram_phase,
docs/quality.md), under its magnitudes, with no Griffin-Lim iterations after them."""

from __future__ import annotations

import torch

from audiovae.dsp.inversion.base import PhaseRule, SynthesisMethod


class ModelPhases(PhaseRule):
    """No rule: the phases come with the model's output (audiovae.dsp.transforms.griffin_lim takes them), so
    this refuses magnitudes alone (the export's inversion, which has no phase input yet)."""

    def forward(self, magnitude: torch.Tensor, first_frame: int) -> torch.Tensor:
        raise ValueError("synthesis method 'learned' takes the model's phases, not a rule over magnitudes")


METHOD = SynthesisMethod("learned", ModelPhases, iterations=0,
                         summary="the phases the model's phase head predicts (features: spectrogram_phase)",
                         takes_model_phase=True)
