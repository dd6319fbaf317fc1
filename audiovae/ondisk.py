"""Whole files in bounded memory: resample into a memory map, reconstruct chunk by chunk into another, write
WAVs a block at a time. `Model.reconstruct_file` and `evaluate` share these, so a file of any length costs
a few blocks of memory (plus its latents: 1/16 of the audio for quickstart)."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from audiovae.audio import AudioReadError, audio_errors, read_blocks
from audiovae.errors import UserError
from audiovae.fileio import atomic_path

if TYPE_CHECKING:
    from audiovae.synth import Latents, Model


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


@dataclass
class Reconstruction:
    """A file and its reconstruction, on disk. `output` is at the training level (the input times
    latents.gain); divide by latents.gain for the input's level."""

    source: np.ndarray  # (samples,) memory map, as read and resampled
    output: np.ndarray  # (samples,) memory map
    peak: float  # of output
    latents: Latents
    kl: np.ndarray  # (latent_size, frames) nats per value
    encode_seconds: float
    decode_seconds: float


@contextmanager
def reconstruction_on_disk(model: Model, source: str | Path, block_seconds: float = 30.0
                           ) -> Iterator[Reconstruction]:
    """Resample `source` into a temporary memory map, encode it and decode it into a second one chunk by chunk;
    both maps (and their folder) are gone when the block ends."""
    with tempfile.TemporaryDirectory(prefix="audiovae-") as tmp:
        wave = read_resampled(source, model.sample_rate, Path(tmp) / "input.f32", block_seconds)
        started = time.perf_counter()
        latents, kl = model.encode_posterior(wave)
        encoded = time.perf_counter()
        output = np.memmap(Path(tmp) / "output.f32", np.float32, "w+", shape=wave.shape)
        position, peak = 0, 0.0
        for piece in model._decode_pieces(torch.from_numpy(latents.values).to(model.device)[None]):
            piece = piece[0, : len(wave) - position]
            output[position : position + len(piece)] = piece
            peak = max(peak, float(np.max(np.abs(piece))) if len(piece) else 0.0)
            position += len(piece)
        try:
            yield Reconstruction(wave, output, peak, latents, kl, encoded - started, time.perf_counter() - encoded)
        finally:
            del wave, output


def write_wav_blocks(destination: str | Path, samples: np.ndarray, sample_rate: int,
                     scales: float | tuple[float, ...], block_seconds: float = 30.0) -> Path:
    """Write `samples` (a memory map or array, (samples,)) times each of `scales` in turn (float32 products,
    as the in-memory path computes them) as 16-bit WAV, clipped to [-1, 1], a block at a time, atomically."""
    import soundfile as sf

    scales = scales if isinstance(scales, tuple) else (scales,)
    block = int(block_seconds * sample_rate)
    with atomic_path(destination) as target, open(target, "wb") as handle:
        with sf.SoundFile(handle, "w", sample_rate, 1, "PCM_16", format="WAV") as out:
            for start in range(0, len(samples), block):
                part = np.asarray(samples[start : start + block], dtype=np.float32)
                for scale in scales:
                    part = part * np.float32(scale)
                out.write(np.clip(part, -1.0, 1.0))
    return Path(destination)
