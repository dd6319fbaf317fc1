"""Quality measurements that need no download: SI-SDR, spectral distances, Frechet distance on log-mels."""

from __future__ import annotations

import numpy as np
import scipy.linalg
import torch

from audiovae.losses import mel_distance, stft_distance

SI_SDR_CAP_DB = 100.0  # identical signals would give +inf; report this instead


def si_sdr(reference: np.ndarray, estimate: np.ndarray) -> float:
    """Scale-invariant signal-to-distortion ratio in dB, capped at SI_SDR_CAP_DB.

    reference, estimate: (samples,). The estimate is projected onto the reference, so a gain does not
    change the value; a delay does.
    """
    reference = np.asarray(reference, np.float64) - np.mean(reference)
    estimate = np.asarray(estimate, np.float64) - np.mean(estimate)
    energy = np.dot(reference, reference)
    if energy == 0:
        return float("nan")
    target = np.dot(estimate, reference) / energy * reference
    noise = estimate - target
    noise_energy = np.dot(noise, noise)
    if noise_energy <= energy * 10 ** (-SI_SDR_CAP_DB / 10):
        return SI_SDR_CAP_DB
    return float(10 * np.log10(np.dot(target, target) / noise_energy))


def _tensor(wave: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(wave, np.float32)).reshape(1, 1, -1)


def mel_distance_np(reference: np.ndarray, estimate: np.ndarray, sample_rate: int) -> float:
    """Multi-scale mel distance (as in training) between two waveforms of equal length."""
    with torch.no_grad():
        return float(mel_distance(_tensor(reference), _tensor(estimate), sample_rate))


def stft_distance_np(reference: np.ndarray, estimate: np.ndarray,
                     windows: tuple[int, ...] = (2048, 1024, 512, 256, 128)) -> float:
    """Multi-resolution STFT distance (spectral convergence + log magnitude) between two waveforms."""
    with torch.no_grad():
        return float(stft_distance(_tensor(reference), _tensor(estimate), windows))


def log_mel_features(wave: np.ndarray, sample_rate: int, n_mels: int = 64) -> np.ndarray:
    """Per-frame log-mel vectors (frames, n_mels) with ~32 ms windows: the features of the Frechet distance."""
    from audiovae.dsp import log_mel

    n_fft = 1 << int(round(np.log2(0.032 * sample_rate)))
    with torch.no_grad():
        frames = log_mel(_tensor(wave)[0, 0], sample_rate, n_fft, n_fft // 2, n_mels)
    return frames.T.numpy().astype(np.float64)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to two feature sets (rows are observations).

    |mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2)); 0 for identical sets.
    """
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = scipy.linalg.sqrtm(cov_a @ cov_b)
    if not np.isfinite(root).all():
        offset = np.eye(len(mu_a)) * 1e-6
        root = scipy.linalg.sqrtm((cov_a + offset) @ (cov_b + offset))
    root = np.real(root)
    value = float(np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a + cov_b - 2 * root))
    return max(value, 0.0)


def mu_law_reference(wave: np.ndarray, sample_rate: int, bits_per_second: float) -> np.ndarray:
    """A trivial codec at a given bitrate: low-pass by resampling to bits_per_second / 8 Hz, 8-bit mu-law,
    and back. What a model's latents must beat to be worth their bits."""
    from audiovae.audio import resample

    low_rate = int(max(1000, min(sample_rate, round(bits_per_second / 8))))
    low = resample(np.asarray(wave, np.float32), sample_rate, low_rate)
    mu = 255.0
    encoded = np.sign(low) * np.log1p(mu * np.minimum(np.abs(low), 1.0)) / np.log1p(mu)
    quantized = np.round((encoded + 1) / 2 * mu) / mu * 2 - 1
    decoded = np.sign(quantized) * ((1 + mu) ** np.abs(quantized) - 1) / mu
    out = resample(decoded.astype(np.float32), low_rate, sample_rate)
    return np.pad(out, (0, max(0, len(wave) - len(out))))[: len(wave)]
