"""Spectral distances between signals: multi-resolution STFT, its complex (phase-aware) form and multi-scale
log-mel. The loss terms train on them and the evaluation measures with them; one home for both."""

from __future__ import annotations

import functools
import math

import torch

from audiovae.dsp.transforms import log_mel_of_magnitude, magnitude_spectrogram


class Spectra:
    """One signal's STFT magnitudes (Hann window, hop = window / 4, centred frames), each window computed once
    and shared by every term that asks: the stft and log_mel terms of a step use the same analyses.

    wave: (batch, 1, samples).
    """

    def __init__(self, wave: torch.Tensor):
        self.wave = wave
        self._magnitudes: dict[int, torch.Tensor] = {}

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
    return torch.stack([(mx - my).abs().mean() for _, mx, my in log_mels(x, y, sample_rate, windows)]).mean()


def log_mels(x: torch.Tensor | Spectra, y: torch.Tensor | Spectra, sample_rate: int,
             windows: tuple[int, ...] = (2048, 1024, 512)) -> list[tuple[int, torch.Tensor, torch.Tensor]]:
    """(window, log-mel of x, log-mel of y) for each of mel_distance's windows that fits the signal: what it
    compares, for a look at one scale (bench/mel_levels.py)."""
    x, y = _spectra(x), _spectra(y)
    pairs = []
    for window in _usable(windows, x.wave.shape[-1], "mel"):
        n_mels = max(16, min(128, window // 16))
        mx, my = (log_mel_of_magnitude(s.magnitude(window).clamp_min(1e-6), sample_rate, n_mels) for s in (x, y))
        pairs.append((window, mx, my))
    return pairs


def frame_convergence(x: torch.Tensor, y: torch.Tensor, ceiling: float = 20.0) -> torch.Tensor:
    """Spectral convergence of natural-log magnitude frames: the Frobenius norm of the linear magnitudes'
    difference over the target's, per item, averaged over the batch. Unlike an L1 over log magnitudes it
    weighs each bin by its loudness, so harmonic peaks count and bins 60 dB under them barely do.

    x, y: (batch, bins, frames) of natural-log magnitudes (target, output); y is clamped at `ceiling` before
    exp so that an untrained output cannot overflow.
    """
    lx, ly = x.float().exp(), y.float().clamp(max=ceiling).exp()
    difference = torch.linalg.vector_norm((lx - ly).flatten(1), dim=1)
    return (difference / torch.linalg.vector_norm(lx.flatten(1), dim=1).clamp_min(1e-7)).mean()


@functools.lru_cache(maxsize=32)
def mel_density(bins: int, sample_rate: int) -> torch.Tensor:
    """Mel bands per hertz at each of `bins` STFT bins from 0 to sample_rate / 2 on the slaney scale (the mel
    distance's): flat to 1 kHz, then falling as 1 / f; scaled to average 1 over the bins. (bins,) float32, cached
    (a training step asks for the same weights every time): do not modify it in place."""
    hz = torch.linspace(0.0, sample_rate / 2, bins)
    density = torch.where(hz < 1000.0, torch.full_like(hz, 3.0 / 200.0),
                          27.0 / (math.log(6.4) * hz.clamp_min(1000.0)))
    return density / density.mean()


def mel_weighted_l1(x: torch.Tensor, y: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """L1 of natural-log STFT magnitude frames with each bin weighted by the mel bands a hertz at its frequency
    (mel_density): the weight the mel distance gives it, about 5.5 below 1 kHz and 0.24 at the top of 44.1 kHz,
    where a plain L1 weighs all bins alike. x, y: (batch, bins, frames) (target, output)."""
    weight = mel_density(x.shape[-2], sample_rate).to(x.device)
    return (weight[:, None] * (x.float() - y.float()).abs()).mean()
