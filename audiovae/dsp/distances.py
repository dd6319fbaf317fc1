"""Spectral distances between signals: multi-resolution STFT, its complex (phase-aware) form, multi-scale
log-mel, and anti-wrapped distances of STFT phases. The loss terms train on them and the evaluation measures with them; one home for both."""

from __future__ import annotations

import math

import torch

from audiovae.dsp.transforms import log_mel_of_magnitude, magnitude_spectrogram


class Spectra:
    """One signal's STFT magnitudes (Hann window, hop = window / 4, centred frames), each window computed once
    and shared by every term that asks: the stft and log_mel terms of a step use the same analyses.

    wave: (batch, 1, samples), or a frame model's frames (batch, channels, frames); phase: the frames' STFT
    phases (batch, bins, frames) in radians, where the representation carries them (features: spectrogram_phase).
    """

    def __init__(self, wave: torch.Tensor, phase: torch.Tensor | None = None):
        self.wave, self.phase = wave, phase
        self._magnitudes: dict[int, torch.Tensor] = {}
        self._phase_weight: torch.Tensor | None = None

    def phase_weight(self) -> torch.Tensor:
        """phase_weight of the frames (a frame model's log magnitudes), computed once for every phase term."""
        if self._phase_weight is None:
            self._phase_weight = phase_weight(self.wave)
        return self._phase_weight

    def magnitude(self, window: int) -> torch.Tensor:
        """|STFT|: (batch, 1, window // 2 + 1, frames)."""
        if window not in self._magnitudes:
            self._magnitudes[window] = magnitude_spectrogram(self.wave.float(), window, window // 4)
        return self._magnitudes[window]


def _spectra(signal: torch.Tensor | Spectra) -> Spectra:
    return signal if isinstance(signal, Spectra) else Spectra(signal)


def _usable(windows: tuple[int, ...], samples: int, what: str) -> list[int]:
    usable = [window for window in windows if window <= samples]
    if not usable:
        raise ValueError(f"every {what} window {windows} is longer than the signal ({samples} samples)")
    return usable


def stft_distance(x: torch.Tensor | Spectra, y: torch.Tensor | Spectra, windows: tuple[int, ...]) -> torch.Tensor:
    """Multi-resolution STFT distance: mean over windows of spectral convergence + L1 of log magnitudes.

    x, y: (batch, 1, samples), or their Spectra; hop = window / 4. Windows longer than the signal are skipped.
    """
    x, y = _spectra(x), _spectra(y)
    terms = []
    for window in _usable(windows, x.wave.shape[-1], "STFT"):
        sx, sy = x.magnitude(window).clamp_min(1e-5), y.magnitude(window).clamp_min(1e-5)
        convergence = torch.linalg.vector_norm(sx - sy) / torch.linalg.vector_norm(sx).clamp_min(1e-7)
        log_distance = (sx.log() - sy.log()).abs().mean()
        terms.append(convergence + log_distance)
    return torch.stack(terms).mean()


def complex_stft_distance(x: torch.Tensor | Spectra, y: torch.Tensor | Spectra, windows: tuple[int, ...]
                          ) -> torch.Tensor:
    """Phase-aware multi-resolution distance: mean over windows of the L1 distance of the complex STFTs'
    real and imaginary parts, divided by the target's mean magnitude (so it does not scale with level).

    x, y: (batch, 1, samples), or their Spectra; hop = window / 4. Windows longer than the signal are
    skipped. Unlike stft_distance it is zero only when the phases agree too.
    """
    x, y = _spectra(x).wave, _spectra(y).wave
    terms = []
    for window in _usable(windows, x.shape[-1], "STFT"):
        hann = torch.hann_window(window, device=x.device)
        sx, sy = (torch.view_as_real(torch.stft(s.float().flatten(0, 1), window, window // 4, window=hann,
                                                return_complex=True)) for s in (x, y))
        terms.append((sx - sy).abs().mean() / sx.square().sum(-1).sqrt().mean().clamp_min(1e-7))
    return torch.stack(terms).mean()


def mel_distance(x: torch.Tensor | Spectra, y: torch.Tensor | Spectra, sample_rate: int,
                 windows: tuple[int, ...] = (2048, 1024, 512)) -> torch.Tensor:
    """Multi-scale mel distance: mean over windows of the L1 distance of natural-log mel magnitudes
    (floor 1e-5, as audiovae.dsp.transforms.log_mel).

    x, y: (batch, 1, samples), or their Spectra. Mel bands scale with the window (window // 16, at most 128).
    """
    x, y = _spectra(x), _spectra(y)
    terms = []
    for window in _usable(windows, x.wave.shape[-1], "mel"):
        n_mels = max(16, min(128, window // 16))
        mx, my = (log_mel_of_magnitude(s.magnitude(window).clamp_min(1e-6), sample_rate, n_mels) for s in (x, y))
        terms.append((mx - my).abs().mean())
    return torch.stack(terms).mean()


def anti_wrapped(difference: torch.Tensor) -> torch.Tensor:
    """|difference| taken around the circle: its distance to the nearest multiple of 2 pi, in [0, pi]
    (APNet's anti-wrapping function, Ai and Ling 2023), so phases a turn apart are equal."""
    return (difference - 2 * math.pi * torch.round(difference / (2 * math.pi))).abs()


def phase_weight(log_magnitude: torch.Tensor) -> torch.Tensor:
    """The weights of the phase distances, (batch, bins, frames): the magnitudes exp(log_magnitude), normalised to
    mean 1 per item (the phase of a silent bin is noise, and a loud bin's phase is what is heard)."""
    weight = torch.exp(log_magnitude.float() - log_magnitude.float().amax(dim=(-2, -1), keepdim=True))
    return weight / weight.mean(dim=(-2, -1), keepdim=True).clamp_min(1e-12)


def _weighted_mean(distance: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return (distance * weight).sum() / weight.sum().clamp_min(1e-12)


def instantaneous_phase_distance(x_phase: torch.Tensor, y_phase: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Anti-wrapped distance of phases y to phases x, (batch, bins, frames) in radians, weighted by `weight`
    (phase_weight of the target). 0 for equal phases, the same for phases a multiple of 2 pi apart, at most pi."""
    return _weighted_mean(anti_wrapped(y_phase.float() - x_phase.float()), weight)


def group_delay_distance(x_phase: torch.Tensor, y_phase: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """instantaneous_phase_distance of the phases' differences from bin to bin (negative group delays), each
    pair weighted by the geometric mean of its two bins' weights."""
    pair = torch.sqrt(weight[..., 1:, :] * weight[..., :-1, :])
    return _weighted_mean(anti_wrapped(torch.diff(y_phase.float(), dim=-2) - torch.diff(x_phase.float(), dim=-2)), pair)


def instantaneous_frequency_distance(x_phase: torch.Tensor, y_phase: torch.Tensor, weight: torch.Tensor
                                     ) -> torch.Tensor:
    """instantaneous_phase_distance of the phases' advances from frame to frame (instantaneous frequencies times
    the hop), each pair weighted by the geometric mean of its two frames' weights."""
    pair = torch.sqrt(weight[..., :, 1:] * weight[..., :, :-1])
    return _weighted_mean(anti_wrapped(torch.diff(y_phase.float(), dim=-1) - torch.diff(x_phase.float(), dim=-1)), pair)


# APNet's three phase distances (Ai and Ling 2023) by the names the loss terms and the validation scores use
PHASE_DISTANCES = {"instantaneous_phase": instantaneous_phase_distance, "group_delay": group_delay_distance,
                   "instantaneous_frequency": instantaneous_frequency_distance}


def phase_distances(x_phase: torch.Tensor, y_phase: torch.Tensor, log_magnitude: torch.Tensor
                    ) -> dict[str, torch.Tensor]:
    """The three PHASE_DISTANCES of phases y to phases x, (batch, bins, frames) in radians, weighted by the
    target's magnitudes (phase_weight of log_magnitude, x's)."""
    weight = phase_weight(log_magnitude)
    return {name: distance(x_phase, y_phase, weight) for name, distance in PHASE_DISTANCES.items()}
