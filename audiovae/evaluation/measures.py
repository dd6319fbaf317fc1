"""Evaluation measures as a registry: each is one entry saying what it applies to, how it is computed and how it
prints; `audiovae evaluate`'s table, metrics.json and metrics.csv are generated from the entries.

Two kinds, by what they look at:

    COMPARISONS  an estimate against its reference, per block of held-out audio, for the model's reconstruction
                 and each reference codec (CANDIDATES): metrics.json reconstruction["<candidate>/<name>"], one
                 column of the reconstruction table
    SIGNALS      one sound on its own, for the held-out audio, the reconstructions and prior samples (SUBJECTS),
                 per block (length-weighted within a file) or per whole file: a section of metrics.json of its
                 own, {subject: value} or {subject: {part: value}}, and its printed lines

A new measure is one entry in one of the two dicts; nothing else changes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from audiovae.evaluation import perceptual
from audiovae.evaluation.metrics import (
    COMB_TOLERANCE_HZ,
    comb_chance,
    comb_share,
    mel_distance_np,
    si_sdr,
    stft_distance_np,
)

# Opus at fixed rates near a frame model's, beside the one at the latents' bitrate (issue 30): Opus at the float32
# latents' rate (64 x their 32 bits x the frame rate, often 50-100 kbit/s) is a bar no small latent can be compared
# with, so every table also shows Opus where our codes live. metrics.json: reconstruction["opus 8 kbps/..."] and
# opus_fixed_bits_per_second["opus 8 kbps"], the rate it reached.
OPUS_FIXED = {"opus 8 kbps": 8000.0, "opus 12 kbps": 12000.0}
CANDIDATES = ("model", "mu-law reference", "opus reference", *OPUS_FIXED, "silence")  # rows of the reconstruction table
SOUNDING = tuple(name for name in CANDIDATES if name != "silence")  # the rows a perceptual measure can judge
SUBJECTS = ("held-out", "model", "prior samples")  # what a signal measure can judge
SUBJECT_LABELS = {"held-out": "held-out", "model": "reconstructions", "prior samples": "prior samples"}


def mean_of_finite(values: list[float]) -> float:
    """The mean of the finite values; NaN when there are none."""
    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


def fmt(value: float | None, digits: int = 2) -> str:
    """A value as the table prints it: `digits` decimals, '-' for none."""
    return "-" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def value_and_reason(result: Any, parts: tuple[str, ...] = ()) -> tuple[Any, str | None]:
    """A measure's result (a number, a perceptual.Score, or an object with `parts` and `reason`) -> (value, or
    {part: value} when it has parts; the reason it is NaN)."""
    reason = getattr(result, "reason", None)
    if parts:
        return {part: getattr(result, part) for part in parts}, reason
    return float(getattr(result, "value", result)), reason


@dataclass(frozen=True)
class Setting:
    """What a measure may need besides the audio: the model's sample rate and latent frame rate (Hz)."""

    sample_rate: int
    frame_rate: float


@dataclass(frozen=True)
class Comparison:
    """An estimate against its reference, per block: compute(reference, estimate, sample_rate) -> a number or a
    perceptual.Score (samples,) each. candidates: the rows it is measured for; undefined: rows recorded as null
    (no value to compare: SI-SDR of silence); perceptual: needs the metrics extra (skipped by --no-perceptual)."""

    name: str
    label: str  # the column header
    compute: Callable[[np.ndarray, np.ndarray, int], Any]
    digits: int = 2
    candidates: tuple[str, ...] = CANDIDATES
    undefined: tuple[str, ...] = ()
    perceptual: bool = False


@dataclass(frozen=True)
class Signal:
    """One sound on its own. scorer(setting) -> score(wave (samples,)), built once per evaluation (a model to
    load, a rate to bind); its result is a number, a perceptual.Score, or an object with `parts` and `reason`.
    per: 'block' (blocks at the training level, length-weighted within a file) or 'file' (the whole file as
    stored, a memory map: for measures that do not depend on the level). about(setting): keys its section
    starts with (ends with, when not about_first); lines(section, metrics): what the table prints (None: one line, subject by subject)."""

    name: str  # the section of metrics.json
    label: str
    subjects: tuple[str, ...]
    per: str
    scorer: Callable[[Setting], Callable[[np.ndarray], Any]]
    parts: tuple[str, ...] = ()
    about: Callable[[Setting], dict[str, Any]] = lambda setting: {}
    about_first: bool = True
    lines: Callable[[dict[str, Any], dict[str, Any]], list[str]] | None = None
    perceptual: bool = False
    digits: int = 2

    def printed(self, section: dict[str, Any], metrics: dict[str, Any]) -> list[str]:
        """The lines of the table for this measure's section."""
        if self.lines is not None:
            return self.lines(section, metrics)

        def shown(value: Any) -> str:
            return " / ".join(fmt(value.get(p), self.digits) for p in self.parts) if self.parts else fmt(value, self.digits)

        heading = self.label + (f" ({' / '.join(self.parts)})" if self.parts else "")
        return [heading + ": " + ", ".join(f"{SUBJECT_LABELS[s]} {shown(section.get(s))}" for s in self.subjects)]


def _dnsmos_scorer(setting: Setting) -> Callable[[np.ndarray], perceptual.Dnsmos]:
    scorer = perceptual.DnsmosScorer()
    return lambda wave: scorer(wave, setting.sample_rate)


def _dnsmos_lines(section: dict[str, Any], metrics: dict[str, Any]) -> list[str]:
    lines = ["", "| DNSMOS P.835 (16 kHz) | SIG | BAK | OVRL |", "| --- | ---: | ---: | ---: |"]
    for name, label in (("held-out", "held-out audio (ceiling)"), ("model", "reconstructions"),
                        ("prior samples", f"prior samples ({metrics['generation']['samples_prior']} prior)")):
        lines.append(f"| {label} | " + " | ".join(fmt(section[name].get(p)) for p in ("sig", "bak", "ovrl")) + " |")
    return lines


def _comb_lines(comb: dict[str, Any], metrics: dict[str, Any]) -> list[str]:
    return ["", f"frame-rate comb (share of spectral peaks within {comb['tolerance_hz']:g} Hz of multiples of "
            f"{comb['frame_rate_hz']:g} Hz; chance {comb['chance']:.2f}): held-out {fmt(comb.get('held-out'))}, "
            f"reconstructions {fmt(comb.get('model'))}, prior samples ({metrics['generation']['samples_prior']}) "
            f"{fmt(comb.get('prior samples'))}"]


# metrics.json `reconstruction` keys and the reconstruction table's columns, in order: one line a measure
COMPARISONS: dict[str, Comparison] = {
    "mel_distance": Comparison("mel_distance", "mel distance", mel_distance_np, 3),
    "stft_distance": Comparison("stft_distance", "STFT distance", lambda ref, est, rate: stft_distance_np(ref, est), 3),
    "si_sdr": Comparison("si_sdr", "SI-SDR dB", lambda ref, est, rate: si_sdr(ref, est), 2, undefined=("silence",)),
    "pesq_wb": Comparison("pesq_wb", "PESQ-WB", perceptual.pesq_wb, 2, SOUNDING, perceptual=True),
    "stoi": Comparison("stoi", "STOI", perceptual.stoi, 3, SOUNDING, perceptual=True),
}

# metrics.json sections of measures of one sound, and their printed lines, in order: one line a measure
SIGNALS: dict[str, Signal] = {
    "dnsmos": Signal("dnsmos", "DNSMOS", SUBJECTS, "block", _dnsmos_scorer, ("sig", "bak", "ovrl"),
                     about=lambda setting: {"version": perceptual.dnsmos_version()}, about_first=False,
                     lines=_dnsmos_lines, perceptual=True),
    "comb": Signal("comb", "frame-rate comb", SUBJECTS, "file",
                   lambda setting: lambda wave: comb_share(wave, setting.sample_rate, setting.frame_rate),
                   about=lambda setting: {"frame_rate_hz": setting.frame_rate, "tolerance_hz": COMB_TOLERANCE_HZ,
                                          "chance": comb_chance(setting.sample_rate, setting.frame_rate)},
                   lines=_comb_lines),
}


class Tally:
    """Length-weighted means of per-block values within a file, their mean over files, and the first reason
    each measure had no value."""

    def __init__(self) -> None:
        self.per_file: dict[str, list[float]] = {}
        self.reasons: dict[str, str] = {}
        self._sums: dict[str, list[float]] = {}

    def add(self, key: str, value: float, weight: float, reason: str | None = None) -> None:
        sums = self._sums.setdefault(key, [0.0, 0.0])
        if np.isfinite(value):
            sums[0] += value * weight
            sums[1] += weight
        elif reason:
            self.reasons.setdefault(key, reason)

    def add_result(self, key: str, result: Any, parts: tuple[str, ...], weight: float) -> None:
        """A measure's result (see value_and_reason): one value at `key`, or each part at `key/part`."""
        value, reason = value_and_reason(result, parts)
        for part, number in (value.items() if parts else [(None, value)]):
            self.add(key if part is None else f"{key}/{part}", number, weight, reason)

    def end_file(self) -> None:
        for key, (total, weight) in self._sums.items():
            self.per_file.setdefault(key, []).append(total / weight if weight else float("nan"))
        self._sums = {}

    def means(self, prefix: str = "") -> dict[str, float]:
        return {key[len(prefix):]: mean_of_finite(v) for key, v in self.per_file.items() if key.startswith(prefix)}


class Measures:
    """The registered measures one evaluation computes (perceptual ones only when asked), with their scorers."""

    def __init__(self, setting: Setting, perceptual_on: bool):
        self.setting = setting
        self.comparisons = [m for m in COMPARISONS.values() if perceptual_on or not m.perceptual]
        self.signals = [m for m in SIGNALS.values() if perceptual_on or not m.perceptual]
        self.scorers = {m.name: m.scorer(setting) for m in self.signals}

    def block(self, tally: Tally, candidates: dict[str, np.ndarray], reference: np.ndarray,
              output: np.ndarray) -> None:
        """One block: each comparison of each candidate with `reference`, and the per-block signal measures of the
        reference (held-out) and the model's `output`; all (samples,) at the training level."""
        weight = len(reference) / self.setting.sample_rate
        for name, estimate in candidates.items():
            for measure in self.comparisons:
                if name in measure.undefined:
                    tally.add(f"{name}/{measure.name}", float("nan"), weight)
                elif name in measure.candidates:
                    result = measure.compute(reference, estimate, self.setting.sample_rate)
                    tally.add_result(f"{name}/{measure.name}", result, (), weight)
        self._signals("block", tally, {"held-out": reference, "model": output}, weight)

    def file(self, tally: Tally, source: np.ndarray, output: np.ndarray) -> None:
        """One whole file as stored (memory maps): the per-file signal measures of source and reconstruction."""
        self._signals("file", tally, {"held-out": source, "model": output}, 1.0)

    def _signals(self, per: str, tally: Tally, waves: dict[str, np.ndarray], weight: float) -> None:
        for measure in self.signals:
            if measure.per == per:
                for subject in (s for s in measure.subjects if s in waves):
                    tally.add_result(f"{measure.name}/{subject}", self.scorers[measure.name](waves[subject]),
                                     measure.parts, weight)

    def needs_prior_samples(self) -> bool:
        return any("prior samples" in m.subjects for m in self.signals)

    def sections(self, tally: Tally, prior_sounds: list[np.ndarray]) -> tuple[dict[str, Any], list[str]]:
        """metrics.json's section of every signal measure (None for one not computed), and notes on the prior
        samples that had no value."""
        sections: dict[str, Any] = {name: None for name in SIGNALS}
        notes: list[str] = []
        for measure in self.signals:
            about = measure.about(self.setting)
            section = dict(about) if measure.about_first else {}
            for subject in measure.subjects:
                if subject == "prior samples":
                    results = [value_and_reason(self.scorers[measure.name](w), measure.parts) for w in prior_sounds]
                    section[subject] = ({p: mean_of_finite([v[p] for v, _ in results]) for p in measure.parts}
                                        if measure.parts else mean_of_finite([v for v, _ in results]))
                    notes += sorted({f"prior samples: {measure.label} {r}" for _, r in results if r})
                elif measure.parts:
                    section[subject] = tally.means(f"{measure.name}/{subject}/")
                else:
                    section[subject] = tally.means(f"{measure.name}/").get(subject, float("nan"))
            sections[measure.name] = section if measure.about_first else {**section, **about}
        return sections, notes


def reconstruction_table(metrics: dict[str, Any], labels: dict[str, str]) -> list[str]:
    """The reconstruction table: a row per candidate in `labels`, a column per comparison."""
    rec = metrics["reconstruction"]
    lines = ["| reconstruction | " + " | ".join(m.label for m in COMPARISONS.values()) + " |",
             "| --- | " + " | ".join("---:" for _ in COMPARISONS) + " |"]
    for name in CANDIDATES:
        if name in labels:
            lines.append(f"| {labels[name]} | "
                         + " | ".join(fmt(rec.get(f"{name}/{m.name}"), m.digits) for m in COMPARISONS.values()) + " |")
    return lines
