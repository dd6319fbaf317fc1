"""Pictures to look at before listening: waveform, log-mel and log spectrograms, training curves (matplotlib,
optional)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from audiovae.errors import UserError
from audiovae.io.atomic import write_atomic


def require_matplotlib(needed_by: str = "--plot") -> None:
    """Raise UserError now when `needed_by` (an option or command) cannot work, before any sound is computed
    or written."""
    _pyplot(needed_by)


def _pyplot(needed_by: str = "--plot"):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UserError(f"{needed_by} needs matplotlib: pip install 'audiovae[plot]'") from None
    return plt


def _save(plt, figure, path: Path) -> Path:
    """Lay out, write as PNG atomically, and free the figure."""
    figure.tight_layout()
    write_atomic(path, lambda tmp: figure.savefig(tmp, format="png", dpi=90))
    plt.close(figure)
    return path


def log_mel_db(wave: np.ndarray, sample_rate: int) -> np.ndarray:
    """Log-mel spectrogram in dB, (mel bands, frames), floored at -100 dB, for pictures."""
    import torch

    from audiovae.dsp.transforms import log_mel

    n_fft = 1024 if sample_rate >= 16000 else 512
    wave = np.pad(wave, (0, max(0, n_fft + 1 - len(wave))))  # the centred STFT needs more than n_fft / 2
    frames = log_mel(torch.from_numpy(np.ascontiguousarray(wave, np.float32)), sample_rate, n_fft, n_fft // 4,
                     80 if sample_rate >= 16000 else 40)
    return (frames.numpy() * 20 / np.log(10)).clip(-100, None)  # natural log magnitude -> dB


def plot_waves(path: Path, wave: np.ndarray, sample_rate: int, reference: np.ndarray | None = None) -> Path:
    """Write a PNG with waveform and log-mel spectrogram of `wave` (and of `reference` above it)."""
    plt = _pyplot()
    rows = [("input", reference), ("output", wave)] if reference is not None else [("", wave)]
    figure, axes = plt.subplots(2 * len(rows), 1, figsize=(10, 3.2 * len(rows)), squeeze=False,
                                gridspec_kw={"height_ratios": [1, 2] * len(rows)})
    for i, (label, signal) in enumerate(rows):
        time = np.arange(len(signal)) / sample_rate
        axes[2 * i, 0].plot(time, signal, linewidth=0.5)
        axes[2 * i, 0].set_xlim(0, max(time[-1], 1e-3) if len(time) else 1)
        axes[2 * i, 0].set_ylim(-1, 1)
        axes[2 * i, 0].set_ylabel(f"{label} amplitude".strip())
        _draw_spectrogram(axes[2 * i + 1, 0], signal, sample_rate)
    axes[-1, 0].set_xlabel("seconds")
    return _save(plt, figure, path)


def plot_spectrogram(path: Path, wave: np.ndarray, sample_rate: int) -> Path:
    """Write a small PNG of the log-mel spectrogram of `wave` (samples,): the picture beside a player."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(6, 2.2))
    _draw_spectrogram(axis, wave, sample_rate)
    axis.set_xlabel("seconds")
    return _save(plt, figure, path)


def plot_spectrogram_panels(path: Path, panels: list[tuple[str, np.ndarray]], sample_rate: int, n_fft: int = 2048,
                            range_db: float = 90.0) -> Path:
    """Write a PNG with one log-spectrogram panel per (title, wave (samples,)), stacked, on one colour scale
    (the loudest bin of all panels down to range_db below it) and one frequency axis in kHz, linear: a comb of
    partials and the noise floor between them show as they are, where mel bands would merge them."""
    import torch

    from audiovae.dsp.transforms import log_spectrogram

    plt = _pyplot("bench/spectrograms.py")
    spectra = []
    for _, wave in panels:
        wave = np.pad(np.asarray(wave, np.float32), (0, max(0, n_fft + 1 - len(wave))))
        frames = log_spectrogram(torch.from_numpy(np.ascontiguousarray(wave)), n_fft, n_fft // 4)
        spectra.append(frames.numpy() * 20 / np.log(10))  # natural log magnitude -> dB
    top = max(float(spectrum.max()) for spectrum in spectra)
    seconds = max(len(wave) for _, wave in panels) / sample_rate
    figure, axes = plt.subplots(len(panels), 1, figsize=(10, 2.8 * len(panels)), squeeze=False, sharex=True)
    for axis, (title, wave), spectrum in zip(axes[:, 0], panels, spectra, strict=True):
        image = axis.imshow(spectrum, origin="lower", aspect="auto", cmap="magma", vmin=top - range_db, vmax=top,
                            extent=(0, len(wave) / sample_rate, 0, sample_rate / 2000), interpolation="nearest")
        axis.set_xlim(0, seconds)
        axis.set_ylabel("kHz")
        axis.set_title(title, fontsize=10, loc="left")
        figure.colorbar(image, ax=axis, label="dB", pad=0.01)
    axes[-1, 0].set_xlabel("seconds")
    return _save(plt, figure, path)


def plot_curves(path: Path, panels: list[tuple[str, dict[str, list[tuple[int, float]]]]]) -> Path:
    """Write a PNG with one panel per (y-axis label, {line label: [(step, value), ...]}), against step."""
    plt = _pyplot()
    figure, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 3.2), squeeze=False)
    for axis, (label, lines) in zip(axes[0], panels, strict=True):
        for name, points in lines.items():
            steps, values = zip(*points, strict=True) if points else ((), ())
            axis.plot(steps, values, marker="o" if len(points) < 20 else None, markersize=3, label=name)
        axis.xaxis.get_major_locator().set_params(integer=True)
        axis.set_xlabel("step")
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
        axis.legend()
    return _save(plt, figure, path)


def _draw_spectrogram(axis, signal: np.ndarray, sample_rate: int) -> None:
    spectrum = log_mel_db(signal, sample_rate)
    axis.imshow(spectrum, origin="lower", aspect="auto", cmap="magma",
                extent=(0, len(signal) / sample_rate, 0, spectrum.shape[0]), vmin=-80)
    axis.set_ylabel("mel band")


def plot_frame_scores(path: Path, start_seconds: np.ndarray, series: dict[str, np.ndarray], title: str,
                      threshold: float | None = None, threshold_label: str = "") -> Path:
    """Write a PNG of per-frame scores over time: one curve per series (start_seconds, values both (frames,)),
    each in its own panel, and a dashed threshold line on the panel named threshold_label."""
    plt = _pyplot()
    figure, axes = plt.subplots(len(series), 1, figsize=(10, 2.4 * len(series)), sharex=True, squeeze=False)
    for axis, (label, values) in zip(axes[:, 0], series.items(), strict=True):
        axis.step(start_seconds, values, where="post", linewidth=0.8)
        if threshold is not None and label == threshold_label:
            axis.axhline(threshold, color="tab:red", linestyle="--", linewidth=0.8, label=f"threshold {threshold:g}")
            axis.legend(loc="upper right", fontsize=8)
        axis.set_ylabel(label, fontsize=8)
    axes[0, 0].set_title(title, fontsize=9)
    axes[-1, 0].set_xlabel("seconds")
    return _save(plt, figure, path)


def plot_roc(path: Path, curves: dict[str, tuple[np.ndarray, np.ndarray]], max_false_positive_rate: float) -> Path:
    """Write a PNG of ROC curves, label -> (false-positive rates, true-positive rates), with the partial-AUC
    region (false-positive rate up to max_false_positive_rate) shaded."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(5, 5))
    axis.axvspan(0, max_false_positive_rate, color="0.9", label=f"pAUC region (FPR <= {max_false_positive_rate:g})")
    axis.plot([0, 1], [0, 1], color="0.6", linestyle=":", linewidth=0.8, label="chance")
    for label, (fpr, tpr) in curves.items():
        axis.plot(fpr, tpr, linewidth=1.2, label=label)
    axis.set_xlim(0, 1)
    axis.set_ylim(0, 1.01)
    axis.set_xlabel("false-positive rate (normal files flagged)")
    axis.set_ylabel("true-positive rate (anomalous files flagged)")
    axis.legend(loc="lower right", fontsize=8)
    return _save(plt, figure, path)
