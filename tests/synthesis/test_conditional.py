"""Conditional generation by label (issue 31): a tiny frame model trained on two synthetic classes (steady tones
and noise bursts) makes, for each label, sounds closer to its own class than to the other; and an unconditional
recipe still trains and generates the same bytes as before conditioning existed."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.conftest import TINY_RATE, write_signal

SEGMENT = 2048  # 16 STFT frames of 128 samples


def write_frame_recipe(path: Path, data_folder: Path, conditional: bool = False, steps: int = 6,
                       prior_steps: int = 6) -> Path:
    """A spectrogram recipe (the README's main job) at a few channels: trains a step in milliseconds."""
    model = {"family": "mel", "channels": 8, "max_channels": 8, "strides": [2], "latent_size": 4,
             "residual_layers": 1, "kernel_size": 3, "activation": "leaky_relu"}
    if conditional:
        model["conditional"] = True
    recipe = {
        "data": {"folder": str(data_folder), "sample_rate": TINY_RATE, "features": "spectrogram",
                 "segment_samples": SEGMENT, "valid_fraction": 0.34,
                 "mel": {"n_fft": 512, "hop_length": 128, "log_floor": 0.00001}},
        "model": model,
        "synthesis": {"method": "peaks", "iterations": 0},
        "loss": {"terms": {"l1": 1.0}, "beta": 0.001, "beta_warmup_steps": 0},
        "train": {"learning_rate": 0.003, "batch_size": 8, "max_steps": steps, "valid_every": steps,
                  "valid_batches": 2, "checkpoint_every": steps, "log_every": 10, "seed": 0, "num_threads": 1,
                  "device": "cpu"},
        "prior": {"kind": "gru", "hidden_size": 16, "layers": 1, "mixtures": 2, "sequence_frames": 8,
                  "batch_size": 8, "max_steps": prior_steps, "max_minutes": None, "valid_every": prior_steps,
                  "checkpoint_every": prior_steps, "log_every": 10, "dropout": 0.0},
    }
    path.write_text(yaml.safe_dump(recipe, sort_keys=False), encoding="utf-8")
    return path


def write_two_classes(root: Path, files: int = 4) -> Path:
    """root/tone/*.wav: steady sines (200-800 Hz); root/noise/*.wav: white noise. 1 s each."""
    for i in range(files):
        write_signal(root / "tone" / f"tone_{i}.wav", 1.0, TINY_RATE, kind="sine", frequency=200.0 + 150.0 * i)
        write_signal(root / "noise" / f"noise_{i}.wav", 1.0, TINY_RATE, kind="noise", seed=i, amplitude=0.5)
    return root


# made at the commit before conditioning existed (db6709b) by this very test: the run's recipe.yaml, the best
# checkpoint's weights, the learned prior's weights and two generated sounds, at one torch thread
UNCONDITIONAL_SHA256 = "e189f49b75f8f85113a025556bebad6a32b80275b8e0896c7d23d526afbd80f8"


def test_an_unconditional_recipe_trains_and_generates_the_same_bytes_as_before(tmp_path):
    import torch

    import audiovae
    from audiovae.config.recipe import load_recipe
    from audiovae.data.prepare import prepare
    from audiovae.io.checkpoint import load_checkpoint, weights_sha256
    from audiovae.training.vae_stage import train

    audio = write_two_classes(tmp_path / "audio", files=2)
    recipe = write_frame_recipe(tmp_path / "frames.yaml", tmp_path / "data")
    prepare([audio], tmp_path / "data", load_recipe(recipe).data, workers=1, progress=False)
    result = train(recipe, runs_root=tmp_path / "runs", progress=False)
    run = result.run_dir
    digest = hashlib.sha256()
    digest.update((run / "recipe.yaml").read_bytes().replace(str(tmp_path).encode(), b"TMP"))
    digest.update(weights_sha256(load_checkpoint(run / "checkpoints" / "best.pt")["model"]).encode())
    digest.update(weights_sha256(load_checkpoint(run / "prior" / "best.pt")["model"]).encode())
    torch.set_num_threads(1)
    sounds = np.stack(audiovae.load(run, device="cpu").generate(2, seconds=0.25, seed=1))
    digest.update(sounds.astype(np.float32).tobytes())
    assert digest.hexdigest() == UNCONDITIONAL_SHA256, digest.hexdigest()
