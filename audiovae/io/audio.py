"""Audio file I/O (soundfile only), mono mixing, resampling and loudness normalization in numpy."""

from __future__ import annotations

import errno
import math
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from audiovae.errors import UserError
from audiovae.io.atomic import atomic_path

# Extensions we look for; decoding is whatever the installed libsndfile supports (mp3 needs >= 1.1).
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".aif", ".aiff", ".aifc", ".mp3")

NORMALIZATIONS = ("peak", "rms", "none")


class AudioReadError(Exception):
    """A file could not be read as audio; the message says why (used for skip reasons)."""


def open_binary(path: str | os.PathLike):
    """Open a file for reading through Python, so names that are not valid UTF-8 work with soundfile too.

    Only regular files (and folders, which fail to open with their own message): opening a named pipe
    would wait forever for a writer, and a device such as /dev/urandom never ends.
    """
    mode = os.stat(path).st_mode
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        kind = "a named pipe" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"
        raise OSError(errno.EINVAL, f"not a regular file but {kind}", os.fspath(path))
    return open(path, "rb")


def audio_info(path: str | os.PathLike) -> tuple[int, int]:
    """(sample rate, frames) from a file's header."""
    with open_binary(path) as handle, sf.SoundFile(handle) as sound:
        return int(sound.samplerate), int(sound.frames)


@contextmanager
def audio_errors() -> Iterator[None]:
    """Turn what soundfile or the OS raises while reading audio into AudioReadError with a short reason."""
    try:
        yield
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as error:
        raise AudioReadError(f"not readable as audio ({_error_reason(error)})") from None
    except OSError as error:
        raise AudioReadError(f"cannot open ({error.strerror or error})") from None


def read_audio(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Read a file as float32 mono.

    Returns (samples: (time,), sample_rate). Raises AudioReadError with a short reason.
    """
    with audio_errors(), open_binary(path) as handle:
        data, sample_rate = sf.read(handle, dtype="float32", always_2d=True)
    return to_mono(data), int(sample_rate)


def _error_reason(error: Exception) -> str:
    text = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
    return text.split(": ", 1)[-1] if "Error opening" in text else text


def to_mono(data: np.ndarray) -> np.ndarray:
    """Average channels: data (time, channels) -> (time,), float32."""
    if data.ndim == 1:
        return data.astype(np.float32, copy=False)
    if data.shape[1] == 1:
        return np.ascontiguousarray(data[:, 0], dtype=np.float32)
    return data.mean(axis=1, dtype=np.float32)


def resample(samples: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """High-quality resampling (soxr 'HQ'); samples: (time,) float32."""
    if from_rate == to_rate:
        return samples
    return soxr.resample(samples, from_rate, to_rate, quality="HQ").astype(np.float32, copy=False)


def normalization_gain(peak: float, rms: float, method: str, target_db: float) -> float:
    """The gain that puts a signal with this peak and RMS at `target_db` dBFS (peak or RMS).

    RMS normalization is limited so that the peak stays at or below 0 dBFS. Silence gets gain 1.
    """
    if method == "none" or peak == 0.0:
        return 1.0
    target = 10.0 ** (target_db / 20.0)
    if method == "peak":
        return target / peak
    if method == "rms":
        return min(target / rms, 1.0 / peak)
    raise ValueError(f"unknown normalization {method!r}; expected one of {NORMALIZATIONS}")


def normalize(samples: np.ndarray, method: str, target_db: float) -> np.ndarray:
    """Scale so that the peak (method 'peak') or RMS ('rms') sits at `target_db` dBFS (see normalization_gain)."""
    if method == "none" or samples.size == 0:
        return samples
    peak = float(np.max(np.abs(samples)))
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))
    gain = normalization_gain(peak, rms, method, target_db)
    return (samples * np.float32(gain)).astype(np.float32, copy=False)


def read_blocks(path: str | os.PathLike, to_rate: int, block_seconds: float = 30.0):
    """Yield (source block, resampled block) pairs of mono float32 audio, reading `block_seconds` at a time.

    The resampler is streamed, so the concatenated output equals resampling the whole file at once.
    Errors from soundfile propagate (callers turn them into reasons or UserErrors).
    """
    with open_binary(path) as handle, sf.SoundFile(handle) as sound:
        stream = None
        if sound.samplerate != to_rate:
            stream = soxr.ResampleStream(sound.samplerate, to_rate, 1, dtype="float32", quality="HQ")
        frames = max(1, int(block_seconds * sound.samplerate))
        for block in sound.blocks(blocksize=frames, dtype="float32", always_2d=True):
            mono = to_mono(block)
            yield mono, (mono if stream is None else stream.resample_chunk(mono))
    if stream is not None:
        yield np.zeros(0, np.float32), stream.resample_chunk(np.zeros(0, np.float32), last=True)


def level_stats(samples: np.ndarray, block: int = 1 << 18) -> tuple[float, float]:
    """(peak, RMS) of a possibly memory-mapped array, read a block at a time."""
    peak, squares = 0.0, 0.0
    for start in range(0, len(samples), block):
        part = np.asarray(samples[start : start + block])
        if part.dtype.kind != "f":  # integers: abs(-32768) would wrap
            part = part.astype(np.float64)
        peak = max(peak, float(np.max(np.abs(part))))  # exact in the samples' own type
        squares += float(np.square(part, dtype=np.float64).sum())  # not np.dot: no BLAS threads
    return peak, (math.sqrt(squares / len(samples)) if len(samples) else 0.0)


PEAK_CEILING = 0.999  # synthesized audio never goes above this


def peak_safe_scale(peak: float, ceiling: float = PEAK_CEILING) -> float:
    """The factor that brings a signal whose peak is `peak` to at most `ceiling` (1.0 when it is already)."""
    return ceiling / peak if peak > ceiling else 1.0


def db(value: float) -> float:
    """Amplitude ratio to decibels, with -inf for zero."""
    return float(20.0 * np.log10(value)) if value > 0 else float("-inf")


def require_finite(path: str | os.PathLike, samples: np.ndarray) -> None:
    """UserError naming `path` when `samples` hold NaN or infinite values: they never reach a file (as 16-bit
    PCM a NaN becomes -32768, a full-scale click)."""
    bad = int(np.count_nonzero(~np.isfinite(samples)))
    if bad:
        raise UserError(f"{path}: the audio to write holds {bad} NaN or infinite samples (the model's output "
                        "diverged); nothing was written")


def write_wav(path: str | os.PathLike, samples: np.ndarray, sample_rate: int, subtype: str = "PCM_16") -> Path:
    """Write mono float samples (time,) in [-1, 1] as a WAV file, atomically; NaN or inf is a UserError."""
    samples = np.asarray(samples, dtype=np.float32).reshape(-1)
    require_finite(path, samples)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:  # through Python: any file name works
            sf.write(handle, np.clip(samples, -1.0, 1.0), sample_rate, subtype=subtype, format="WAV")
    return Path(path)


def load_for_model(path: str | os.PathLike, sample_rate: int) -> np.ndarray:
    """Read any audio file as mono float32 at `sample_rate`, raising UserError naming the file."""
    try:
        samples, rate = read_audio(path)
    except AudioReadError as error:
        raise UserError(f"{path}: {error}") from None
    if samples.size == 0:
        raise UserError(f"{path}: the file has no samples")
    if not np.all(np.isfinite(samples)):
        raise UserError(f"{path}: the file contains NaN or infinite samples")
    return resample(samples, rate, sample_rate)


def read_resampled(source: str | Path, rate: int, destination: Path, block_seconds: float = 30.0) -> np.memmap:
    """Decode `source` to mono float32 at `rate` into the file `destination`, a block at a time; returns it as a
    read-only memory map. UserError naming the file when it is unreadable, empty or holds NaN/inf."""
    count, bad = 0, 0
    try:
        with open(destination, "wb") as handle, audio_errors():
            for block, resampled in read_blocks(source, rate, block_seconds):
                bad += int(np.count_nonzero(~np.isfinite(block)))
                resampled.astype(np.float32).tofile(handle)
                count += len(resampled)
    except AudioReadError as error:
        raise UserError(f"{source}: {error}") from None
    if count == 0:
        raise UserError(f"{source}: the file has no samples")
    if bad:
        raise UserError(f"{source}: the file contains {bad} NaN or infinite samples")
    return np.memmap(destination, np.float32, "r", shape=(count,))


def write_wav_blocks(destination: str | Path, samples: np.ndarray, sample_rate: int,
                     scales: float | tuple[float, ...], block_seconds: float = 30.0) -> Path:
    """Write `samples` (a memory map or array, (samples,)) times each of `scales` in turn (float32 products,
    as the in-memory path computes them) as 16-bit WAV, clipped to [-1, 1], a block at a time, atomically. A block
    holding NaN or inf (or a non-finite scale) is a UserError and nothing is written."""
    import soundfile as sf

    scales = scales if isinstance(scales, tuple) else (scales,)
    block = int(block_seconds * sample_rate)
    with atomic_path(destination) as target, open(target, "wb") as handle:
        with sf.SoundFile(handle, "w", sample_rate, 1, "PCM_16", format="WAV") as out:
            for start in range(0, len(samples), block):
                part = np.asarray(samples[start : start + block], dtype=np.float32)
                for scale in scales:
                    part = part * np.float32(scale)
                require_finite(destination, part)
                out.write(np.clip(part, -1.0, 1.0))
    return Path(destination)
