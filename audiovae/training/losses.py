"""Training objectives as named, weighted terms: spectral distances, L1/MSE, and the KL to the prior.

A reconstruction term is a small function registered in LOSS_TERMS by the name a recipe's `loss.terms`
uses (stft: multi-resolution STFT distance; complex_stft: its phase-aware form; log_mel: multi-scale log-mel distance; mse; l1;
frame_convergence: spectral convergence of a frame model's log magnitudes; mel_weighted_l1: l1 over log-STFT frames
with each bin weighted as the mel scale weighs its frequency); the
KL is the term `kl`, weighted by beta(step); the adversary adds its own terms with `plus`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from audiovae.config.schema import require
from audiovae.dsp.distances import (
    Spectra,
    complex_stft_distance,
    frame_convergence,
    mel_distance,
    mel_weighted_l1,
    stft_distance,
)
from audiovae.models.base import Posterior
from audiovae.priors.base import GAUSSIAN, Prior

if TYPE_CHECKING:
    from audiovae.config.recipe import LossConfig, Recipe


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


# LossTerm.needs -> (whether a recipe's features fit, the refusal's message)
NEEDS: dict[str, tuple[Callable[[Recipe], bool], str]] = {
    "wave": (lambda recipe: recipe.data.representation.is_waveform, "needs waveform features (data.features: wave)"),
    "frames": (lambda recipe: not recipe.data.representation.is_waveform,
               "needs log-magnitude frames (data.features: mel or spectrogram)"),
    "bins": (lambda recipe: recipe.data.features == "spectrogram",
             "needs log-STFT frames, whose channels are frequency bins (data.features: spectrogram)")}


@dataclass(frozen=True)
class LossTerm:
    """A reconstruction term: compute(target, output, loss config, sample rate) -> scalar tensor, target and
    output as Spectra (their waveforms are `.wave`), so that terms share their STFTs."""

    name: str
    compute: Callable[[Spectra, Spectra, LossConfig, int], torch.Tensor]
    needs: str | None = None  # the features it reads, a key of NEEDS (None: any)
    windows_key: str | None = None  # the loss key holding its analysis windows, checked against the crop

    def check(self, recipe: Recipe) -> None:
        """Raise ConfigError when the recipe cannot use this term."""
        if self.needs is not None:
            fits, message = NEEDS[self.needs]
            require(fits(recipe), f"loss.terms.{self.name}", message)
        if self.windows_key is not None:
            length = recipe.training_samples
            windows = getattr(recipe.loss, self.windows_key)
            require(bool(windows) and min(windows) <= length, f"loss.{self.windows_key}",
                    f"needs a window no longer than the training length ({length} samples)")


LOSS_TERMS: dict[str, LossTerm] = {term.name: term for term in (
    LossTerm("stft", lambda x, y, config, rate: stft_distance(x, y, config.stft_windows), "wave", "stft_windows"),
    LossTerm("log_mel", lambda x, y, config, rate: mel_distance(x, y, rate, config.mel_windows), "wave",
             "mel_windows"),
    LossTerm("complex_stft", lambda x, y, config, rate: complex_stft_distance(x, y, config.stft_windows), "wave",
             "stft_windows"),
    LossTerm("mse", lambda x, y, config, rate: (x.wave.float() - y.wave.float()).square().mean()),
    LossTerm("l1", lambda x, y, config, rate: (x.wave.float() - y.wave.float()).abs().mean()),
    LossTerm("frame_convergence", lambda x, y, config, rate: frame_convergence(x.wave, y.wave), "frames"),
    LossTerm("mel_weighted_l1", lambda x, y, config, rate: mel_weighted_l1(x.wave, y.wave, rate), "bins"),
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
