"""Training objectives: spectral distances for waveforms, L1/MSE for frames, and the weighted KL."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from audiovae.config import LossConfig
from audiovae.dsp import log_mel, power_spectrogram
from audiovae.models.base import Posterior


@dataclass
class LossResult:
    """One evaluation of the objective. `total` is what is minimized; the rest is for logs."""

    total: torch.Tensor
    reconstruction: torch.Tensor
    kl: torch.Tensor  # nats per latent frame (summed over latent dimensions), before beta
    beta: float


def stft_distance(x: torch.Tensor, y: torch.Tensor, windows: tuple[int, ...]) -> torch.Tensor:
    """Multi-resolution STFT distance: mean over windows of spectral convergence + L1 of log magnitudes.

    x, y: (batch, 1, samples); hop = window / 4. Windows longer than the signal are skipped.
    """
    terms = []
    for window in windows:
        if window > x.shape[-1]:
            continue
        sx = power_spectrogram(x.float(), window, window // 4).clamp_min(1e-10).sqrt()
        sy = power_spectrogram(y.float(), window, window // 4).clamp_min(1e-10).sqrt()
        convergence = torch.linalg.vector_norm(sx - sy) / torch.linalg.vector_norm(sx).clamp_min(1e-7)
        log_distance = (sx.log() - sy.log()).abs().mean()
        terms.append(convergence + log_distance)
    if not terms:
        raise ValueError(f"every STFT window {windows} is longer than the signal ({x.shape[-1]} samples)")
    return torch.stack(terms).mean()


def mel_distance(x: torch.Tensor, y: torch.Tensor, sample_rate: int, windows: tuple[int, ...] = (2048, 1024, 512)
                 ) -> torch.Tensor:
    """Multi-scale mel distance: mean over windows of the L1 distance of natural-log mel magnitudes.

    x, y: (batch, 1, samples). Mel bands scale with the window (window // 16, at most 128).
    """
    terms = []
    for window in windows:
        if window > x.shape[-1]:
            continue
        n_mels = max(16, min(128, window // 16))
        mx = log_mel(x.float(), sample_rate, window, window // 4, n_mels)
        my = log_mel(y.float(), sample_rate, window, window // 4, n_mels)
        terms.append((mx - my).abs().mean())
    if not terms:
        raise ValueError(f"every mel window {windows} is longer than the signal ({x.shape[-1]} samples)")
    return torch.stack(terms).mean()


def beta_at(step: int, config: LossConfig) -> float:
    """KL weight at a training step: a linear ramp from 0 to beta over beta_warmup_steps."""
    if config.beta_warmup_steps == 0:
        return config.beta
    return config.beta * min(1.0, step / config.beta_warmup_steps)


def kl_term(posterior: Posterior, free_bits: float = 0.0) -> torch.Tensor:
    """KL in nats per latent frame (summed over dimensions, averaged over batch and frames).

    With free bits, each dimension's batch-and-frame-averaged KL below `free_bits` costs nothing, so
    the optimizer gains nothing from collapsing a dimension all the way to the prior.
    """
    per_dimension = posterior.kl().float().mean(dim=(0, 2))  # (latent_size,)
    if free_bits > 0:
        per_dimension = per_dimension.clamp_min(free_bits)
    return per_dimension.sum()


def reconstruction_loss(x: torch.Tensor, y: torch.Tensor, config: LossConfig, sample_rate: int) -> torch.Tensor:
    """The recipe's reconstruction term between target x and output y (same shape)."""
    if config.reconstruction == "mse":
        return (x.float() - y.float()).square().mean()
    if config.reconstruction == "l1":
        return (x.float() - y.float()).abs().mean()
    total = x.new_zeros((), dtype=torch.float32)
    if config.stft_weight:
        total = total + config.stft_weight * stft_distance(x, y, config.stft_windows)
    if config.mel_weight:
        total = total + config.mel_weight * mel_distance(x, y, sample_rate, config.mel_windows)
    return total


def vae_loss(x: torch.Tensor, y: torch.Tensor, posterior: Posterior, config: LossConfig, sample_rate: int,
             step: int) -> LossResult:
    """Reconstruction + beta(step) * KL."""
    reconstruction = reconstruction_loss(x, y, config, sample_rate)
    kl = kl_term(posterior, config.free_bits)
    beta = beta_at(step, config)
    return LossResult(reconstruction + beta * kl, reconstruction, kl, beta)
