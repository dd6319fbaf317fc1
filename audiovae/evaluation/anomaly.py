"""Anomaly scores from a model of normal sounds: how badly a file fits, where, and how well that separates.

A file's score is a rate in nats per second, so files of any length compare. Per latent frame:

    reconstruction = sum over the frame's feature values of |features - reconstruction from the posterior mean|
    kl             = KL(q(z|x) || N(0, I)) summed over the frame's latent values
    elbo           = reconstruction + kl   (the negative ELBO under a unit-scale Laplace decoder, less a constant)

each divided by the frame's duration; a file's score is the mean over its frames (its total over its length).
Files are streamed a chunk of latent frames at a time (Model.reconstruction_chunks), so hours of audio cost a few
blocks of memory plus one float per frame. ROC AUC and the partial AUC at a false-positive rate of at most 0.1
are the DCASE task 2 measures; pAUC here is the area under the ROC for FPR in [0, 0.1] divided by 0.1 (chance:
0.05), as the DCASE task descriptions define it, not scikit-learn's McClish-standardized `max_fpr` variant.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from audiovae.errors import UserError
from audiovae.io.audio import read_resampled

if TYPE_CHECKING:
    from audiovae.data.representations import Representation
    from audiovae.synthesis.model import Model

MEASURES = ("elbo", "reconstruction")
DEFAULT_MEASURE = "elbo"  # ranks better on held-out machine sounds (mean AUC 0.707 vs 0.693): docs/anomaly.md
MAX_FALSE_POSITIVE_RATE = 0.1  # of the partial AUC
THRESHOLD_PERCENTILE = 95.0  # of normal files' scores: about 1 normal file in 20 is flagged
ANOMALOUS_EXIT_CODE = 3  # `audiovae score --threshold` exits with it when any file is anomalous
MEASURE_LABELS = {"elbo": "negative ELBO", "reconstruction": "reconstruction error"}


@dataclass(frozen=True)
class FileScores:
    """One file's scores per latent frame, nats per second: (frames,) each; frame i covers
    [i * frame_seconds, (i + 1) * frame_seconds) of the file."""

    path: Path
    seconds: float  # the file's duration
    frame_seconds: float
    reconstruction: np.ndarray
    kl: np.ndarray

    @property
    def elbo(self) -> np.ndarray:
        """The negative ELBO per frame: reconstruction + KL."""
        return self.reconstruction + self.kl

    def frames(self, measure: str) -> np.ndarray:
        """Per-frame scores of `measure` ('elbo' or 'reconstruction'), (frames,) nats per second."""
        return self.elbo if measure == "elbo" else self.reconstruction

    def score(self, measure: str) -> float:
        """The file's score: the mean of its frames' (its total over its duration)."""
        return float(np.mean(self.frames(measure)))

    @property
    def start_seconds(self) -> np.ndarray:
        """(frames,) the time each frame starts, seconds into the file."""
        return np.arange(len(self.reconstruction)) * self.frame_seconds


def score_wave(model: Model, wave: np.ndarray, path: str | Path = "") -> FileScores:
    """Scores of a waveform (samples,) at the model's rate (a memory map is read a chunk at a time)."""
    steps_per_frame = model.net.hop
    frame_seconds = model.frame_samples / model.sample_rate
    reconstruction, kl = [], []
    magnitudes = model.net.input_channels - model.representation.phase_channels  # a phase head's phases: not scored
    for chunk in model.reconstruction_chunks(wave):
        error = np.abs(chunk.features[:magnitudes] - chunk.reconstruction[:magnitudes])  # (channels, steps)
        frames = chunk.stop - chunk.start
        padded = np.full((error.shape[0], frames * steps_per_frame), np.nan, np.float32)
        padded[:, : error.shape[1]] = error
        per_frame = padded.reshape(error.shape[0], frames, steps_per_frame).transpose(1, 0, 2).reshape(frames, -1)
        covered = np.isfinite(per_frame).any(axis=1)  # the last frame may start after the sound's last step
        # a frame the sound ends inside counts its mean error over a whole frame: its rate is the same
        mean_error = np.nanmean(per_frame[covered], axis=1)
        reconstruction.append(mean_error * per_frame.shape[1] / frame_seconds)
        kl.append(chunk.kl.sum(axis=0)[covered] / frame_seconds)
    return FileScores(Path(path), len(wave) / model.sample_rate, frame_seconds,
                      np.concatenate(reconstruction).astype(np.float64), np.concatenate(kl).astype(np.float64))


def score_file(model: Model, path: str | Path, block_seconds: float = 30.0) -> FileScores:
    """Scores of an audio file of any length: resampled into a temporary memory map, scored chunk by chunk.
    UserError naming the file when it cannot be read."""
    with tempfile.TemporaryDirectory(prefix="audiovae-") as tmp:
        wave = read_resampled(path, model.sample_rate, Path(tmp) / "input.f32", block_seconds)
        try:
            return score_wave(model, wave, path)
        finally:
            del wave


def score_files(model: Model, paths: Sequence[Path], progress: bool = False, what: str = "score") -> list[FileScores]:
    """Scores of each file, in order, with a progress bar on stderr."""
    import sys

    from tqdm import tqdm

    return [score_file(model, path) for path in tqdm(paths, unit="file", desc=what, disable=not progress,
                                                      file=sys.stderr)]


# ---- how well scores separate normal from anomalous ---------------------------------------------------------
@dataclass(frozen=True)
class RocCurve:
    """The ROC of scores where higher means more anomalous: rates at each distinct threshold, from (0, 0) to (1, 1)."""

    false_positive_rate: np.ndarray
    true_positive_rate: np.ndarray
    thresholds: np.ndarray  # a file is flagged when its score >= the threshold; +inf at (0, 0)


def _finite(scores: Iterable[float], what: str) -> np.ndarray:
    values = np.asarray(list(scores), np.float64)
    if values.size == 0:
        raise UserError(f"no {what} scores to compare")
    if not np.all(np.isfinite(values)):
        raise UserError(f"{np.count_nonzero(~np.isfinite(values))} {what} scores are not finite")
    return values


def roc_curve(normal: Iterable[float], anomalous: Iterable[float]) -> RocCurve:
    """The ROC of anomalous (positives) against normal (negatives) scores; tied scores make one diagonal step."""
    negatives, positives = _finite(normal, "normal"), _finite(anomalous, "anomalous")
    scores = np.concatenate([negatives, positives])
    labels = np.concatenate([np.zeros(len(negatives)), np.ones(len(positives))])
    order = np.argsort(-scores, kind="stable")
    scores, labels = scores[order], labels[order]
    last_of_tie = np.r_[np.nonzero(np.diff(scores))[0], len(scores) - 1]
    true_positives = np.cumsum(labels)[last_of_tie]
    false_positives = (last_of_tie + 1) - true_positives
    return RocCurve(np.r_[0.0, false_positives / len(negatives)], np.r_[0.0, true_positives / len(positives)],
                    np.r_[np.inf, scores[last_of_tie]])


def _area(x: np.ndarray, y: np.ndarray) -> float:
    """Trapezoid area under y(x), x non-decreasing (numpy 1.x has no np.trapezoid)."""
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2))


def roc_auc(normal: Iterable[float], anomalous: Iterable[float]) -> float:
    """Area under the ROC: the chance that an anomalous file scores above a normal one (ties count half)."""
    curve = roc_curve(normal, anomalous)
    return _area(curve.false_positive_rate, curve.true_positive_rate)


def partial_auc(normal: Iterable[float], anomalous: Iterable[float],
                max_false_positive_rate: float = MAX_FALSE_POSITIVE_RATE) -> float:
    """Area under the ROC for false-positive rates in [0, max], divided by max: 1 for a perfect ranking, max / 2
    for chance (0.05 at 0.1). The curve is interpolated linearly at the cut."""
    curve = roc_curve(normal, anomalous)
    fpr, tpr = curve.false_positive_rate, curve.true_positive_rate
    inside = fpr <= max_false_positive_rate
    cut_tpr = float(np.interp(max_false_positive_rate, fpr, tpr))  # fpr never decreases
    # after a vertical step at the cut, interp takes its top; the area below is the same either way
    x, y = np.r_[fpr[inside], max_false_positive_rate], np.r_[tpr[inside], cut_tpr]
    return _area(x, y) / max_false_positive_rate


def propose_threshold(normal: Iterable[float], percentile: float = THRESHOLD_PERCENTILE) -> float:
    """A threshold from normal scores alone: their `percentile` (linear interpolation between files)."""
    return float(np.percentile(_finite(normal, "normal"), percentile))


@dataclass(frozen=True)
class Separation:
    """How one measure separates normal from anomalous files."""

    measure: str
    auc: float
    partial_auc: float
    roc: RocCurve
    threshold: float  # proposed from the normal files alone (THRESHOLD_PERCENTILE)
    true_positive_rate_at_threshold: float
    false_positive_rate_at_threshold: float


def separation(measure: str, normal: Sequence[float], anomalous: Sequence[float]) -> Separation:
    """AUC, pAUC, the ROC and the proposed threshold (with the rates it gives on these files) of one measure."""
    threshold = propose_threshold(normal)
    return Separation(measure, roc_auc(normal, anomalous), partial_auc(normal, anomalous),
                      roc_curve(normal, anomalous), threshold,
                      float(np.mean(np.asarray(anomalous) >= threshold)), float(np.mean(np.asarray(normal) >= threshold)))


def compare(normal: Sequence[FileScores], anomalous: Sequence[FileScores]) -> dict[str, Separation]:
    """Separation of every measure, by name."""
    return {measure: separation(measure, [s.score(measure) for s in normal], [s.score(measure) for s in anomalous])
            for measure in MEASURES}


# ---- a baseline that needs no model ------------------------------------------------------------------------
def mean_log_spectrum(representation: Representation, wave: np.ndarray, block_seconds: float = 30.0) -> np.ndarray:
    """A waveform's mean frame (channels,) of a log-magnitude representation (data.features mel or spectrogram),
    computed in blocks of about block_seconds."""
    import torch

    block = max(1, round(block_seconds * representation.data.sample_rate))
    total, count = None, 0
    for start in range(0, len(wave), block):
        piece = torch.from_numpy(np.ascontiguousarray(wave[start : start + block], np.float32))[None]
        frames = representation.split_phase(representation.from_audio(piece))[0][0].double()  # (channels, steps)
        total = frames.sum(dim=1) if total is None else total + frames.sum(dim=1)
        count += frames.shape[1]
    return (total / count).numpy()


def baseline_scores(normal_means: np.ndarray, means: np.ndarray) -> np.ndarray:
    """The model-free score: Euclidean distance of each file's mean log spectrum (files, channels) to the mean of
    the normal files' (normal files, channels)."""
    centre = np.asarray(normal_means).mean(axis=0)
    return np.linalg.norm(np.asarray(means) - centre, axis=1)


# ---- what `score` writes -------------------------------------------------------------------------------------
def scores_table(scores: Sequence[FileScores], threshold: float | None = None, measure: str = DEFAULT_MEASURE,
                 labels: Sequence[str] | None = None) -> list[list[object]]:
    """CSV rows, header first: a `file` row per file (its score over its whole length), then a `frame` row per
    latent frame (where in the file it went wrong). Both measures are columns; with a threshold, `anomalous` says
    whether `measure` reaches it (file rows decide the exit status, frame rows say where)."""
    header = ["file", "scope", "start_seconds", "end_seconds", "elbo_nats_per_second",
              "reconstruction_nats_per_second"]
    header += ["label"] if labels is not None else []
    header += ["anomalous"] if threshold is not None else []
    rows: list[list[object]] = [header]

    def row(file_scores: FileScores, index: int, scope: str, start: float, end: float, elbo: float,
            reconstruction: float, value: float) -> list[object]:
        cells: list[object] = [str(file_scores.path), scope, f"{start:.4f}", f"{end:.4f}", f"{elbo:.4f}",
                               f"{reconstruction:.4f}"]
        cells += [labels[index]] if labels is not None else []
        cells += [int(value >= threshold)] if threshold is not None else []
        return cells

    for i, s in enumerate(scores):
        rows.append(row(s, i, "file", 0.0, s.seconds, s.score("elbo"), s.score("reconstruction"), s.score(measure)))
        chosen = s.frames(measure)
        for j, (start, elbo, reconstruction) in enumerate(zip(s.start_seconds, s.elbo, s.reconstruction, strict=True)):
            end = min(start + s.frame_seconds, s.seconds)
            rows.append(row(s, i, "frame", start, end, elbo, reconstruction, chosen[j]))
    return rows
