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

from audiovae.priors.learned import PriorConfig

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


# ---- a tiny prepared dataset and recipe, shared by the train and synth tests ----------------------------------

TINY_RATE = 16000
TINY_SEGMENT = 2048  # samples per training segment: 0.128 s at 16 kHz


def write_tiny_recipe(path: Path, data_folder: Path, bands: int = 4, sample_rate: int = TINY_RATE, **train) -> Path:
    """A recipe small enough to train a step on CPU in a fraction of a second; `train` overrides train keys.

    4 PQMF bands x strides 4, 4: 64 samples per latent frame, 32 latent frames per segment.
    """
    import yaml

    settings = {"optimizer": "adamw", "learning_rate": 0.002, "batch_size": 4, "max_steps": 4,
                "valid_every": 2, "valid_batches": 2, "checkpoint_every": 2, "log_every": 1, "seed": 0, "num_threads": 1,
                "device": "cpu", **train}
    recipe = {
        "data": {"folder": str(data_folder), "sample_rate": sample_rate, "features": "wave",
                 "segment_samples": TINY_SEGMENT, "valid_fraction": 0.34},
        "model": {"family": "conv", "bands": bands, "channels": 4, "max_channels": 8, "strides": [4, 4],
                  "latent_size": 4, "residual_layers": 1, "kernel_size": 7, "activation": "snake"},
        "loss": {"reconstruction": "spectral", "stft_windows": [256, 128], "mel_windows": [256], "beta": 0.01,
                 "beta_warmup_steps": 0},
        "train": settings,
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(recipe, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture(scope="session", autouse=True)
def torch_one_thread():
    """Run torch on one thread in every test: tiny models train several times faster that way on a small,
    busy machine (threads fight over cores for kernels too small to split)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory, torch_one_thread) -> Path:
    """Six short tones and chirps (0.5-1.5 s, 16 kHz) prepared into 2048-sample segments, a third held out."""
    from audiovae.config.data import DataConfig
    from audiovae.data.prepare import prepare

    root = tmp_path_factory.mktemp("tiny-data")
    sounds = [("sine", 220.0, 0.5), ("chirp", 100.0, 0.75), ("sine", 440.0, 1.0),
              ("chirp", 300.0, 1.25), ("sine", 880.0, 1.5), ("chirp", 50.0, 0.9)]
    for i, (kind, frequency, seconds) in enumerate(sounds):
        write_signal(root / "audio" / f"sound_{i}.wav", seconds, TINY_RATE, kind=kind, frequency=frequency,
                     stop_frequency=4000.0)
    data = DataConfig(folder=str(root / "prepared"), segment_samples=TINY_SEGMENT, valid_fraction=0.34)
    prepare([root / "audio"], root / "prepared", data, workers=1, progress=False)
    return root / "prepared"


@pytest.fixture(scope="session")
def tiny_recipe(tiny_dataset, tmp_path_factory) -> Path:
    """Path of a recipe named 'tiny' (see `write_tiny_recipe`: 4 steps) training on `tiny_dataset`."""
    return write_tiny_recipe(tmp_path_factory.mktemp("recipes") / "tiny.yaml", tiny_dataset)


@pytest.fixture(scope="session")
def tiny_run(tiny_recipe, tmp_path_factory) -> Path:
    """Run folder of `tiny_recipe` trained for 4 steps (validation and checkpoints every 2)."""
    from audiovae.training.vae_stage import train

    result = train(tiny_recipe, runs_root=tmp_path_factory.mktemp("runs"), progress=False)
    assert result.step == 4 and result.stopped == "finished"
    return result.run_dir


@pytest.fixture(name="write_tiny_recipe")
def write_tiny_recipe_fixture():
    """The `write_tiny_recipe` function."""
    return write_tiny_recipe


# ---- a tiny frame model (the README's main job) and a conditional one on two synthetic classes --------------------
SEGMENT = 2048  # 16 STFT frames of 128 samples


def write_frame_recipe(path: Path, data_folder: Path, conditional: bool = False, steps: int = 6,
                       prior_steps: int = 6) -> Path:
    """A spectrogram recipe (the README's main job) at a few channels: trains a step in milliseconds."""
    import yaml

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


@pytest.fixture(scope="session")
def conditional_run(tmp_path_factory) -> Path:
    """A conditional frame model (and its conditional learned prior) trained on tone/ and noise/ folders."""
    from audiovae.config.recipe import load_recipe
    from audiovae.data.prepare import prepare
    from audiovae.training.vae_stage import train

    root = tmp_path_factory.mktemp("conditional")
    audio = write_two_classes(root / "audio")
    recipe = write_frame_recipe(root / "frames.yaml", root / "data", conditional=True, steps=150, prior_steps=200)
    result = prepare([audio], root / "data", load_recipe(recipe).data, workers=1, progress=False, labels="folders")
    assert result.labels is not None and set(result.labels) == {"noise", "tone"}
    return train(recipe, runs_root=root / "runs", progress=False).run_dir


# ---- tiny learned priors on synthetic latents (priors/, realtime/) ----------------------------------------
# how far another CPU's float32 kernels move the v0.2 fixture run's outputs, as a share of their peak (an AMD EPYC
# against the Intel Xeon they were made on: reconstructions up to 5e-4, peak-locked phases amplifying the last bits)
RECONSTRUCTION_ROUNDING = 2e-3
GENERATION_ROUNDING = 1e-4  # prior samples
PRIOR_LATENT = 4  # latent size of the tiny priors' synthetic latents
TINY_PRIORS = {"gru": PriorConfig(kind="gru", hidden_size=16, layers=2, mixtures=3, dropout=0.0),
               "conv": PriorConfig(kind="conv", hidden_size=16, layers=4, kernel_size=3, dilation_cycle=3, mixtures=3,
                                   dropout=0.0),
               "flow": PriorConfig(kind="flow", hidden_size=16, layers=2, kernel_size=3, dilation_cycle=3, couplings=3,
                                   group_frames=4, mixtures=1, dropout=0.0)}


def synthetic_latents(frames: int, seed: int) -> np.ndarray:
    """Speech-like latents (PRIOR_LATENT, frames): bursts of AR(1) motion (0.5-2 s at 62.5 frames/s) around a slowly
    drifting centre, separated by short quiet stretches near a fixed 'silence' frame; neither zero mean nor unit
    variance. A prior that sticks in silence or drifts away fails the 5-s window checks."""
    rng = np.random.default_rng(seed)
    z = np.zeros((PRIOR_LATENT, frames), np.float32)
    silence = np.array([0.5, -0.3, 0.2, 0.0])
    state, active, left = silence.copy(), False, 0
    for t in range(frames):
        if left == 0:
            active = not active
            left = int(rng.integers(30, 120) if active else rng.integers(10, 40))
        left -= 1
        centre = silence + (0.4 * np.sin(2 * np.pi * t / 500 + np.arange(PRIOR_LATENT)) if active else 0)
        spread = 0.25 if active else 0.02
        state = centre + 0.9 * (state - centre) + spread * rng.standard_normal(PRIOR_LATENT)
        z[:, t] = state
    return z


@pytest.fixture()
def one_thread_each_test():
    """One torch thread set again for each test, for modules whose code under test sets threads of its own
    (the prior stage, the sampler): `pytestmark = pytest.mark.usefixtures("one_thread_each_test")`."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
