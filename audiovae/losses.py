"""Training objectives as named, weighted terms: spectral distances, L1/MSE, and the KL to the prior.

A reconstruction term is a small function registered in LOSS_TERMS by the name a recipe's `loss.terms`
uses (stft: multi-resolution STFT distance; complex_stft: its phase-aware form; log_mel: multi-scale log-mel distance; mse; l1); the
KL is the term `kl`, weighted by beta(step); the adversary adds its own terms with `plus`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from audiovae.dsp import log_mel_of_magnitude, magnitude_spectrogram
from audiovae.models.base import Posterior
from audiovae.priors import GAUSSIAN, Prior
from audiovae.schema import require

if TYPE_CHECKING:
    from audiovae.config import LossConfig, Recipe


@dataclass
class LossResult:
    """One evaluation of the objective. `total` is what is minimized; `terms` are the unweighted values by
    name (logged by those names), `weights` what each was multiplied by in `total`."""

    total: torch.Tensor
    terms: dict[str, torch.Tensor]
    weights: dict[str, float]
    notes: dict[str, float] = field(default_factory=dict)  # logged, not optimized (e.g. the critic's loss)

    @property
    def reconstruction(self) -> torch.Tensor:
        """The weighted sum of the reconstruction terms (every term but the KL and the adversary's)."""
        parts = [self.weights[k] * v for k, v in self.terms.items() if k in LOSS_TERMS]
        return torch.stack(parts).sum() if parts else self.total.new_zeros(())

    @property
    def kl(self) -> torch.Tensor:
        """Nats per latent frame (summed over latent dimensions), before beta."""
        return self.terms["kl"]

    @property
    def beta(self) -> float:
        return self.weights["kl"]

    def plus(self, terms: dict[str, torch.Tensor], weights: dict[str, float],
             notes: dict[str, float] | None = None) -> LossResult:
        """This objective with more weighted terms (e.g. the adversary's) added."""
        total = self.total + sum(weights[k] * v for k, v in terms.items())
        return LossResult(total, {**self.terms, **terms}, {**self.weights, **weights}, {**self.notes, **(notes or {})})

    def logs(self) -> dict[str, float]:
        """loss, every term by name, the reconstruction sum and beta (when there is a KL), and the notes."""
        values = {"loss": self.total.item(), **{name: value.item() for name, value in self.terms.items()}}
        if "kl" in self.terms:
            values.update(reconstruction=self.reconstruction.item(), beta=self.beta)
        return {**values, **self.notes}


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
    (floor 1e-5, as audiovae.dsp.log_mel).

    x, y: (batch, 1, samples), or their Spectra. Mel bands scale with the window (window // 16, at most 128).
    """
    x, y = _spectra(x), _spectra(y)
    terms = []
    for window in _usable(windows, x.wave.shape[-1], "mel"):
        n_mels = max(16, min(128, window // 16))
        mx, my = (log_mel_of_magnitude(s.magnitude(window).clamp_min(1e-6), sample_rate, n_mels) for s in (x, y))
        terms.append((mx - my).abs().mean())
    return torch.stack(terms).mean()


def beta_at(step: int, config: LossConfig) -> float:
    """KL weight at a training step: a linear ramp from 0 to beta over beta_warmup_steps."""
    if config.beta_warmup_steps == 0:
        return config.beta
    return config.beta * min(1.0, step / config.beta_warmup_steps)


def kl_term(posterior: Posterior, free_bits: float = 0.0, prior: Prior = GAUSSIAN) -> torch.Tensor:
    """KL in nats per latent frame (summed over dimensions, averaged over batch and frames).

    With free bits, each dimension's batch-and-frame-averaged KL below `free_bits` costs nothing, so
    the optimizer gains nothing from collapsing a dimension all the way to the prior.
    """
    per_dimension = prior.kl(posterior).float().mean(dim=(0, 2))  # (latent_size,)
    if free_bits > 0:
        per_dimension = per_dimension.clamp_min(free_bits)
    return per_dimension.sum()


@dataclass(frozen=True)
class LossTerm:
    """A reconstruction term: compute(target, output, loss config, sample rate) -> scalar tensor, target and
    output as Spectra (their waveforms are `.wave`), so that terms share their STFTs."""

    name: str
    compute: Callable[[Spectra, Spectra, LossConfig, int], torch.Tensor]
    needs_waveform: bool = False
    windows_key: str | None = None  # the loss key holding its analysis windows, checked against the crop

    def check(self, recipe: Recipe) -> None:
        """Raise ConfigError when the recipe cannot use this term."""
        require(not self.needs_waveform or recipe.data.representation.is_waveform, f"loss.terms.{self.name}",
                "needs waveform features (data.features: wave)")
        if self.windows_key is not None:
            length = recipe.training_samples
            windows = getattr(recipe.loss, self.windows_key)
            require(bool(windows) and min(windows) <= length, f"loss.{self.windows_key}",
                    f"needs a window no longer than the training length ({length} samples)")


LOSS_TERMS: dict[str, LossTerm] = {term.name: term for term in (
    LossTerm("stft", lambda x, y, config, rate: stft_distance(x, y, config.stft_windows), True, "stft_windows"),
    LossTerm("log_mel", lambda x, y, config, rate: mel_distance(x, y, rate, config.mel_windows), True,
             "mel_windows"),
    LossTerm("complex_stft", lambda x, y, config, rate: complex_stft_distance(x, y, config.stft_windows), True,
             "stft_windows"),
    LossTerm("mse", lambda x, y, config, rate: (x.wave.float() - y.wave.float()).square().mean()),
    LossTerm("l1", lambda x, y, config, rate: (x.wave.float() - y.wave.float()).abs().mean()),
)}


def reconstruction_terms(x: torch.Tensor, y: torch.Tensor, config: LossConfig, sample_rate: int
                         ) -> dict[str, torch.Tensor]:
    """The recipe's reconstruction terms between target x and output y (same shape), unweighted, by name.

    Terms of weight 0 are not computed. Each STFT is taken once, whichever terms use it.
    """
    x, y = Spectra(x), Spectra(y)
    return {name: LOSS_TERMS[name].compute(x, y, config, sample_rate) for name, weight in config.terms.items()
            if weight}


def reconstruction_loss(x: torch.Tensor, y: torch.Tensor, config: LossConfig, sample_rate: int) -> torch.Tensor:
    """The weighted sum of the recipe's reconstruction terms."""
    terms = reconstruction_terms(x, y, config, sample_rate)
    return sum((config.terms[name] * value for name, value in terms.items()), x.new_zeros((), dtype=torch.float32))


def vae_loss(x: torch.Tensor, y: torch.Tensor, posterior: Posterior, config: LossConfig, sample_rate: int,
             step: int, prior: Prior = GAUSSIAN) -> LossResult:
    """Reconstruction terms + beta(step) * KL to the prior."""
    terms = reconstruction_terms(x, y, config, sample_rate)
    terms["kl"] = kl_term(posterior, config.free_bits, prior)
    weights = {**{name: config.terms[name] for name in terms if name != "kl"}, "kl": beta_at(step, config)}
    total = sum(weights[name] * value for name, value in terms.items())
    return LossResult(total, terms, weights)
