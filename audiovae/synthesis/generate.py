"""Generation of any length: latents streamed from a prior (continuing a prompt's, when given) into the
chunked decoder, and the samples into files, so memory stays bounded however long the sound.

    prior.sample_stream -> latent chunks -> Model.decode_stream -> samples -> memory map on disk
                                                                   -> training level, peak-safe -> WAV

Sound i uses seed + i: the same seed gives the same bytes, whatever the batch size.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from audiovae.errors import UserError
from audiovae.io.audio import audio_info, db, level_stats, load_for_model, write_wav_blocks
from audiovae.priors.base import GAUSSIAN, Prior

if TYPE_CHECKING:
    from audiovae.synthesis.model import Model

PRIOR_CHUNK_FRAMES = 256  # latent frames drawn from a prior at a time
SILENT_PROMPT_DB = -60.0  # a prompt quieter than this (RMS, dBFS) has nothing to continue


def choose_prior(model: Model, name: str | Prior | None) -> Prior:
    """'learned' (the run's), 'gaussian' (N(0, I)), a Prior, or None: the learned one when the run has one."""
    if isinstance(name, Prior):
        return name
    if name in (None, "learned") and model.prior_refusal:  # never another VAE's prior, never silently N(0, I)
        raise UserError(model.prior_refusal)
    if name in (None, "learned") and getattr(model.learned_prior, "unchecked", None):
        print(f"warning: {model.learned_prior.unchecked}", file=sys.stderr)
    if name is None:
        return model.learned_prior or GAUSSIAN
    if name == "gaussian":
        return GAUSSIAN
    if name == "learned":
        if model.learned_prior is None:
            raise UserError(f"{model.run}: this run has no learned prior; train one with: audiovae train-prior "
                            f"{model.run}")
        return model.learned_prior
    raise UserError(f"unknown prior {name!r}; use learned or gaussian")


def prompt_latents(model: Model, path: str | Path) -> torch.Tensor:
    """A prompt file's latents (1, latent_size, frames) at the training level, checked: readable, not silent,
    at least one latent frame long. Another sample rate is resampled, and said on stderr."""
    wave = load_for_model(path, model.sample_rate)
    rate = audio_info(path)[0]
    if rate != model.sample_rate:
        print(f"{path}: resampled from {rate} Hz to the model's {model.sample_rate} Hz", file=sys.stderr)
    return encode_prompt(model, wave, str(path))


def encode_prompt(model: Model, wave: np.ndarray, where: str) -> torch.Tensor:
    """The latents (1, latent_size, frames) of a prompt's whole latent frames, so an output starts with them;
    UserError (`where` names the prompt) when it is silent or shorter than one latent frame."""
    peak, rms = level_stats(wave)
    if peak == 0 or db(rms) < SILENT_PROMPT_DB:
        raise UserError(f"{where}: the prompt is silent (RMS {db(rms):.0f} dBFS); give a sound to continue")
    if len(wave) < model.frame_samples:
        raise UserError(f"{where}: the prompt is {len(wave)} samples, shorter than one latent frame "
                        f"({model.frame_samples} samples at {model.sample_rate} Hz)")
    usable = len(wave) // model.frame_samples * model.frame_samples
    return torch.from_numpy(model.encode(wave[:usable]).values)[None]


def latent_chunks(model: Model, prior: Prior, frames: int, temperature: float, seeds: list[int],
                  prompt: torch.Tensor | None = None) -> Iterator[torch.Tensor]:
    """(len(seeds), latent_size, n) chunks: the prompt's latents first (when given), then `frames` new ones.
    Row i draws from its own generator, seeded seed i, so the batch does not change what a row gets."""
    generators = [torch.Generator().manual_seed(seed) for seed in seeds]
    prompts = prompt.expand(len(seeds), -1, -1) if prompt is not None else None
    if prompts is not None:
        yield prompts
    yield from prior.sample_stream(len(seeds), model.latent_size, frames, temperature, generators,
                                   PRIOR_CHUNK_FRAMES, prompts)


def generate_files(model: Model, paths: list[Path], seconds: float | None, temperature: float, seed: int,
                   prior: Prior, prompt: torch.Tensor | None = None, batch_size: int = 8,
                   progress: bool = False) -> int:
    """Write one generated sound per path (16-bit WAV, atomically); returns the samples in each.

    The samples go to memory maps beside the outputs while they are decoded, then to the WAVs at the
    training level: a 10-minute sound holds a few seconds of audio in memory.
    """
    from tqdm import tqdm

    new = model.recipe.data.segment_samples if seconds is None else round(seconds * model.sample_rate)
    frames = model.frames_for(new)
    given = 0 if prompt is None else prompt.shape[-1]
    samples = given * model.frame_samples + new
    folder = paths[0].parent
    with tqdm(total=len(paths) * samples, unit="sample", unit_scale=True, desc="generate", disable=not progress,
              file=sys.stderr) as bar, tempfile.TemporaryDirectory(prefix=".generate-", dir=folder) as tmp:
        for first in range(0, len(paths), batch_size):
            batch = paths[first : first + batch_size]
            seeds = [seed + first + i for i in range(len(batch))]
            maps = [np.memmap(Path(tmp) / f"{i}.f32", np.float32, "w+", shape=(samples,)) for i in range(len(batch))]
            position = 0
            for piece in model.decode_stream(latent_chunks(model, prior, frames, temperature, seeds, prompt),
                                              given + frames):
                piece = piece[:, : samples - position]
                for row, target in zip(piece, maps, strict=True):
                    target[position : position + len(row)] = row
                position += piece.shape[1]
                bar.update(piece.shape[1] * len(batch))
            for path, wave in zip(batch, maps, strict=True):
                write_wav_blocks(path, wave, model.sample_rate, model.level_scales(wave))
            del maps
    return samples
