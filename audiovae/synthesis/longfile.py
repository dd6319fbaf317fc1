"""Whole files in bounded memory: a file resampled into a memory map (audiovae.io.audio.read_resampled) is
reconstructed chunk by chunk into another. `Model.reconstruct_file` and `evaluate` share this, so a file of
any length costs a few blocks of memory (plus its latents: 1/16 of the audio for quickstart)."""

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

from audiovae.io.audio import peak_safe_scale, read_resampled

if TYPE_CHECKING:
    from audiovae.synthesis.model import Latents, Model


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

    @property
    def written_scale(self) -> float:
        """The peak-safe scale the output is written with at the input's level (1.0 when its peak stays under full
        scale there): `reconstruct` writes output * written_scale / latents.gain."""
        return peak_safe_scale(self.peak / self.latents.gain)


@contextmanager
def reconstruction_on_disk(model: Model, source: str | Path, block_seconds: float = 30.0,
                           encoder: Model | None = None) -> Iterator[Reconstruction]:
    """Resample `source` into a temporary memory map, encode it (by `encoder`, default `model`: a conditional
    model under another label transfers the sound to model's) and decode it into a second one chunk by chunk;
    both maps (and their folder) are gone when the block ends."""
    with tempfile.TemporaryDirectory(prefix="audiovae-") as tmp:
        wave = read_resampled(source, model.sample_rate, Path(tmp) / "input.f32", block_seconds)
        started = time.perf_counter()
        latents, kl = (encoder or model).encode_posterior(wave)
        encoded = time.perf_counter()
        output = np.memmap(Path(tmp) / "output.f32", np.float32, "w+", shape=wave.shape)
        position, peak = 0, 0.0
        for piece in model.decode_pieces(torch.from_numpy(latents.values).to(model.device)[None]):
            piece = piece[0, : len(wave) - position]
            output[position : position + len(piece)] = piece
            peak = max(peak, float(np.max(np.abs(piece))) if len(piece) else 0.0)
            position += len(piece)
        try:
            yield Reconstruction(wave, output, peak, latents, kl, encoded - started, time.perf_counter() - encoded)
        finally:
            del wave, output
