"""What a synthesis method is: a phase rule (the phases an inverse STFT starts from under magnitudes alone),
as a scriptable module so that synthesis in Python and the export (audiovae.nn.spectral) run the same code."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


class PhaseRule(nn.Module):
    """magnitude (batch, bins, frames), first_frame -> phases broadcastable to it. first_frame: the index of the
    first frame in the whole sound, when the magnitudes are a chunk of one (chunked synthesis; 0 in the export)."""

    def __init__(self, n_fft: int, hop_length: int):
        super().__init__()
        self.n_fft, self.hop_length = n_fft, hop_length

    def forward(self, magnitude: torch.Tensor, first_frame: int) -> torch.Tensor:
        raise NotImplementedError


@dataclass(frozen=True)
class SynthesisMethod:
    """A registry entry of audiovae.dsp.inversion.SYNTHESIS_METHODS.

    phases: the PhaseRule class, built with (n_fft, hop_length); iterations: the fast Griffin-Lim iterations
    after the start phases when a recipe names the method without `iterations`; summary: one line for docs and
    errors."""

    name: str
    phases: type[PhaseRule]
    iterations: int
    summary: str
