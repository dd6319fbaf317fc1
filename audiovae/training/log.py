"""What a training run writes besides checkpoints: metrics.jsonl, TensorBoard, and sounds to listen to."""

from __future__ import annotations

import json

import numpy as np
import torch

from audiovae.config.recipe import Recipe
from audiovae.io.atomic import write_atomic
from audiovae.io.run_folder import RunFolder
from audiovae.models import VAE
from audiovae.priors.base import GAUSSIAN


class RunLog:
    """metrics.jsonl (and TensorBoard when installed), written by rank 0 only."""

    def __init__(self, run: RunFolder, enabled: bool, resume_step: int | None):
        self.enabled = enabled
        self.run = run
        self.path = run.metrics_path
        self.writer = None
        if not enabled:
            return
        if resume_step is not None and self.path.exists():
            # drop lines logged after the checkpoint we resume from, so the log matches an unbroken run
            kept = [line for line in self.path.read_text().splitlines()
                    if line.strip() and json.loads(line).get("step", 0) <= resume_step]
            write_atomic(self.path, lambda tmp: tmp.write_text("".join(line + "\n" for line in kept)))
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(run.tensorboard_dir))
        except ImportError:
            self.writer = None

    def write(self, split: str, step: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps({"split": split, "step": step, **{k: round(v, 6) for k, v in values.items()}})
                         + "\n")
        if self.writer is not None:
            for key, value in values.items():
                self.writer.add_scalar(f"{split}/{key}", value, step)

    @torch.no_grad()
    def listen(self, model: VAE, example: torch.Tensor, step: int, recipe: Recipe, seed: int) -> None:
        """Write one held-out input, its reconstruction and one prior sample to samples/*.wav (replaced at
        each validation) and to TensorBoard, so a run can be heard while it trains. Waveform models only."""
        if not self.enabled or not recipe.data.representation.is_waveform:
            return
        from audiovae.io.audio import write_wav

        sample_rate = recipe.data.sample_rate
        x = example[None].to(next(model.parameters()).device)
        latent = model.encode(x).mean
        noise = GAUSSIAN.sample(tuple(latent.shape), 1.0, torch.Generator().manual_seed(seed)).to(latent.device)
        sounds = {"input": x, "reconstruction": model.decode(latent, x.shape[-1]),
                  "prior": model.decode(noise, x.shape[-1])}
        folder = self.run.samples_dir
        for name, wave in sounds.items():
            wave = wave.float().cpu().reshape(-1).clamp(-1, 1)
            write_wav(folder / f"{name}.wav", wave.numpy(), sample_rate)
            if self.writer is not None:
                from audiovae.io.plots import log_mel_db

                self.writer.add_audio(f"samples/{name}", wave[None], step, sample_rate)
                spectrum = log_mel_db(wave.numpy(), sample_rate)  # (mels, frames), dB in [-100, ...]
                image = np.clip((spectrum + 80.0) / 80.0, 0.0, 1.0)[::-1].copy()  # low bands at the bottom
                self.writer.add_image(f"spectrogram/{name}", image[None], step, dataformats="CHW")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
