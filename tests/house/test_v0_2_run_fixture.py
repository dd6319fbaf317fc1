"""A 0.2 spectrogram run with its learned prior (tests/fixtures/v0.2-spectrogram, made at commit 8865f54 by
fixtures/make_v0.2_fixture.py) loads and synthesizes the same bytes it did then.

Only the public API (audiovae.load and the Model's methods), so the package can move underneath it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import audiovae

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
FIXTURE_DIR = FIXTURES / "v0.2-spectrogram"
SAMPLE_RATE = 16000  # the fixture recipe's data.sample_rate


@pytest.fixture(scope="module")
def expected() -> dict[str, np.ndarray]:
    with np.load(FIXTURES / "v0.2-spectrogram-outputs.npz") as saved:
        return {name: saved[name] for name in saved.files}


@pytest.fixture(scope="module")
def model():
    # one torch thread, as the fixture was made: with two, decoding a batch of 2 sounds moves the last bit of
    # some samples (the learned-prior pair here), which is torch's kernels, not a change in audiovae
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield audiovae.load(FIXTURE_DIR, device="cpu")
    torch.set_num_threads(threads)


def test_the_v0_2_run_loads_with_its_learned_prior(model):
    assert model.learned_prior is not None


def test_the_v0_2_run_reconstructs_the_same_samples(model, expected):
    assert np.array_equal(model.reconstruct(expected["input"]), expected["reconstruction"])


def test_the_v0_2_run_generates_the_same_samples_from_its_learned_prior_by_default(model, expected):
    learned = np.stack(model.generate(2, seconds=0.5, seed=3))
    assert learned.shape == (2, 8000)
    assert np.array_equal(learned, expected["generated_learned"])
    # the default really is the learned prior: N(0, I) with the same seed gives another sound
    assert not np.array_equal(expected["generated_learned"][0], expected["generated_gaussian"][0])


def test_the_v0_2_run_generates_the_same_samples_from_the_gaussian_prior(model, expected):
    gaussian = np.stack(model.generate(1, seconds=0.5, seed=3, prior="gaussian"))
    assert np.array_equal(gaussian, expected["generated_gaussian"])


def test_the_v0_2_run_writes_the_same_wav_bytes(model, expected, tmp_path):
    source = tmp_path / "input.wav"
    sf.write(str(source), expected["input"], SAMPLE_RATE, subtype="FLOAT")
    written = model.reconstruct_file(source, tmp_path / "output.wav")
    assert hashlib.sha256(written.read_bytes()).hexdigest() == str(expected["reconstruct_file_sha256"][0])
