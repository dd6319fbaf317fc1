"""Shared test helpers: synthesize signals (sines, chirps, noise) and write them as audio files with soundfile.

Fixtures:
    synthesize    -> the `synthesize` function below: samples (frames, channels) float32
    write_signal  -> `write_signal` with relative paths taken under the test's tmp_path
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

KINDS = ("sine", "chirp", "noise", "mix", "silence", "nan")


def synthesize(
    seconds: float,
    sample_rate: int,
    channels: int = 1,
    kind: str = "sine",
    frequency: float = 440.0,
    amplitude: float = 0.5,
    seed: int = 0,
    frames: int | None = None,
    stop_frequency: float | None = None,
) -> np.ndarray:
    """A test signal: (frames, channels) float32, frames = round(seconds * sample_rate) unless given.

    kind: sine (channel c at frequency * (1 + c / 2), so channels differ), chirp (linear sweep from
    `frequency` to `stop_frequency`, default 0.45 * sample_rate), noise (uniform white noise, peak `amplitude`), mix (sine + chirp +
    noise, peak `amplitude`), silence (zeros), nan (all NaN; write it with subtype FLOAT).
    """
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; expected one of {KINDS}")
    frames = round(seconds * sample_rate) if frames is None else frames
    time = np.arange(frames, dtype=np.float64)[:, None] / sample_rate  # (frames, 1) seconds
    channel = np.arange(channels, dtype=np.float64)[None, :]  # (1, channels)
    rng = np.random.default_rng(seed)
    duration = max(frames / sample_rate, 1e-9)
    top = 0.45 * sample_rate if stop_frequency is None else stop_frequency

    def sine() -> np.ndarray:
        return np.sin(2 * np.pi * frequency * (1 + channel / 2) * time)

    def chirp() -> np.ndarray:
        # phase of f(t) = f0 + (f1 - f0) t / T
        phase = 2 * np.pi * (frequency * time + (top - frequency) * time**2 / (2 * duration))
        return np.sin(phase + channel)

    def noise() -> np.ndarray:
        return rng.uniform(-1.0, 1.0, size=(frames, channels))

    if kind == "sine":
        signal = sine()
    elif kind == "chirp":
        signal = chirp()
    elif kind == "noise":
        signal = noise()
    elif kind == "mix":
        signal = (sine() + chirp() + 0.5 * noise()) / 2.5
    elif kind == "silence":
        signal = np.zeros((frames, channels))
    else:
        signal = np.full((frames, channels), np.nan)
    return (amplitude * signal).astype(np.float32)


def write_signal(
    path: str | os.PathLike,
    seconds: float,
    sample_rate: int,
    channels: int = 1,
    subtype: str = "PCM_16",
    kind: str = "sine",
    **signal,
) -> Path:
    """Synthesize a signal (see `synthesize`; extra keywords go there) and write it to `path`.

    The container follows the extension (.wav, .flac, .ogg, ...); pass subtype="VORBIS" for .ogg.
    Parent folders are created. Returns the path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    samples = synthesize(seconds, sample_rate, channels, kind, **signal)
    sf.write(str(path), samples, sample_rate, subtype=subtype)
    return path


@pytest.fixture(name="synthesize")
def synthesize_fixture():
    """The `synthesize` function."""
    return synthesize


@pytest.fixture(name="write_signal")
def write_signal_fixture(tmp_path):
    """`write_signal`, with a relative path resolved under the test's tmp_path."""

    def write(path: str | os.PathLike, *args, **kwargs) -> Path:
        return write_signal(tmp_path / path, *args, **kwargs)

    return write
