"""Pictures to look at before listening: waveform and log-mel spectrogram (matplotlib, optional)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from audiovae.errors import UserError
from audiovae.io.atomic import write_atomic


def require_matplotlib() -> None:
    """Raise UserError now when --plot cannot work, before any sound is computed or written."""
    _pyplot()


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UserError("--plot needs matplotlib: pip install 'audiovae[plot]'") from None
    return plt


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
        spectrum = log_mel_db(signal, sample_rate)
        axes[2 * i + 1, 0].imshow(spectrum, origin="lower", aspect="auto", cmap="magma",
                                  extent=(0, len(signal) / sample_rate, 0, spectrum.shape[0]), vmin=-80)
        axes[2 * i + 1, 0].set_ylabel("mel band")
    axes[-1, 0].set_xlabel("seconds")
    figure.tight_layout()
    write_atomic(path, lambda tmp: figure.savefig(tmp, format="png", dpi=90))
    plt.close(figure)
    return path
