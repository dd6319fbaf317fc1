"""Synthesis methods: how frames of log magnitudes become sound, chosen by a recipe's `synthesis:` section.

A method is a phase rule (the phases an inverse STFT starts from under magnitudes alone) followed by
`iterations` of fast Griffin-Lim; one module per method (zeros.py, advancing.py, peaks.py, textured.py) and one line in
SYNTHESIS_METHODS below. This package sits at the bottom of the signal code: it imports torch and the config
helpers only, so the Griffin-Lim loops (audiovae.dsp.transforms for synthesis in Python, audiovae.nn.spectral
for the export), the representations that call them (audiovae.data.representations) and the recipe that
validates the section (audiovae.config.recipe) all import it, and it imports none of them.
"""

from __future__ import annotations

from dataclasses import dataclass

from audiovae.config.schema import choice, require
from audiovae.dsp.inversion import advancing, peaks, textured, zeros
from audiovae.dsp.inversion.base import PhaseAdvance, PhaseRule, SynthesisMethod, locked_phases

# `synthesis.method` -> its entry: the one line a new method adds
SYNTHESIS_METHODS: dict[str, SynthesisMethod] = {
    "zeros": zeros.METHOD,
    "advancing": advancing.METHOD,
    "peaks": peaks.METHOD,
    "textured": textured.METHOD,
}


@dataclass(frozen=True)
class SynthesisConfig:
    """A recipe's `synthesis:` section (frame features only: a waveform model has nothing to synthesize).

    method: a name in SYNTHESIS_METHODS; iterations: fast Griffin-Lim iterations after the method's start phases
    (null: the method's own count, written into the resolved recipe); momentum: of fast Griffin-Lim (Perraudin
    et al. 2013); noise_level: nats added to the log magnitudes of the bins the method gives noise phases (a
    method with such bins only, SynthesisMethod.noise): a model trained with an L1 over log magnitudes gives
    a noise-like bin the median of its log magnitude, 0.18 nats (1.6 dB) under its power, and this puts that
    back (docs/quality.md). Resolved recipes and checkpoints store them all, so a changed default never
    changes a run.
    """

    method: str
    iterations: int | None = None
    momentum: float = 0.99
    noise_level: float = 0.0

    def __post_init__(self):
        choice("method", self.method, tuple(SYNTHESIS_METHODS))
        if self.iterations is None:
            object.__setattr__(self, "iterations", SYNTHESIS_METHODS[self.method].iterations)
        require(self.iterations >= 0, "iterations", "must be >= 0")
        require(0 <= self.momentum < 1, "momentum", "must be in [0, 1)")
        require(-1 <= self.noise_level <= 1, "noise_level", "must be in [-1, 1] (nats)")
        require(self.noise_level == 0 or SYNTHESIS_METHODS[self.method].noise, "noise_level",
                f"method {self.method!r} gives no bins noise phases; remove the key or use a method that does ("
                f"{', '.join(name for name, m in SYNTHESIS_METHODS.items() if m.noise)})")

    def phase_rule(self, n_fft: int, hop_length: int) -> PhaseRule:
        """The method's phase rule for an STFT of n_fft points every hop_length samples."""
        return SYNTHESIS_METHODS[self.method].phases(n_fft, hop_length, self.noise_level)

    @property
    def streams(self) -> bool:
        """Whether frames can become sound one block at a time: a causal form and no Griffin-Lim iterations."""
        return SYNTHESIS_METHODS[self.method].advance is not None and self.iterations == 0

    def phase_advance(self, n_fft: int, hop_length: int) -> PhaseAdvance:
        """The method's causal form (see `streams`), for an STFT of n_fft points every hop_length samples."""
        advance = SYNTHESIS_METHODS[self.method].advance
        if advance is None:
            raise ValueError(f"synthesis method {self.method!r} has no causal form")
        return advance(n_fft, hop_length, self.noise_level)


__all__ = ["SYNTHESIS_METHODS", "PhaseAdvance", "PhaseRule", "SynthesisConfig", "SynthesisMethod", "locked_phases"]
