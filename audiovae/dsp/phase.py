"""Phase rules: the phases an inverse STFT starts from under magnitudes alone (zeros, advancing at the bins'
centres, or locked to the magnitudes' peaks). Loop-free and scriptable, so the export uses the same rules as
synthesis in Python (audiovae.dsp.transforms.griffin_lim, audiovae.nn.spectral.MelInversion)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

GRIFFIN_LIM_STARTS = ("zeros", "advancing", "peaks")  # the phases Griffin-Lim starts from, here and in audiovae.dsp.transforms


def check_griffin_lim_start(start: str) -> None:
    """ValueError unless `start` names one of GRIFFIN_LIM_STARTS (dsp.griffin_lim and MelInversion)."""
    if start not in GRIFFIN_LIM_STARTS:
        raise ValueError(f"unknown Griffin-Lim start {start!r}; expected one of {GRIFFIN_LIM_STARTS}")


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
    batch = x.shape[0]
    padded = F.pad(x.reshape(batch * frames, 1, bins), (reach, reach), value=-1e9)
    _, owner = F.max_pool1d(padded, 2 * reach + 1, 1, return_indices=True)
    owner = (owner - reach).clamp(0, bins - 1).reshape(batch, frames, bins)
    below = torch.cat([x[..., :1], x[..., :-1]], -1)
    above = torch.cat([x[..., 1:], x[..., -1:]], -1)
    curvature = below - 2 * x + above
    offset = (0.5 * (below - above) / curvature.clamp(max=-1e-6)).clamp(-0.5, 0.5)
    offset = torch.where(curvature < -1e-6, offset, torch.zeros_like(offset))  # a parabola's vertex, in bins
    frequency = owner.to(x.dtype) + torch.gather(offset, -1, owner)  # each bin's peak, in bins
    step = torch.remainder(frequency * hop_length, n_fft) * (2 * math.pi / n_fft)
    integrated = torch.cumsum(step, 1) - step[:, :1]
    away = torch.arange(bins, device=x.device)[None, None] - owner
    phase = torch.gather(integrated, -1, owner) - math.pi * away.to(x.dtype)
    return phase.transpose(1, 2).reshape(log_magnitude.shape)


def start_phase(magnitude: torch.Tensor, start: str, n_fft: int, hop_length: int, first: int = 0) -> torch.Tensor:
    """The phases Griffin-Lim starts from under `magnitude` (batch, bins, frames), broadcastable to it: 0
    ('zeros'), advancing_phase from frame `first` ('advancing') or peak_locked_phase of the magnitudes ('peaks').
    One choice for audiovae.dsp.transforms.griffin_lim and MelInversion."""
    if start == "advancing":
        return advancing_phase(magnitude.shape[-2], magnitude.shape[-1], n_fft, hop_length, magnitude.device, first)
    if start == "peaks":
        return peak_locked_phase(torch.log(magnitude.clamp_min(1e-12)), n_fft, hop_length)
    return torch.zeros_like(magnitude)
