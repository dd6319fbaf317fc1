"""A 0.2 spectrogram run with its learned prior (tests/fixtures/v0.2-spectrogram, made at commit 8865f54 by
fixtures/make_v0.2_fixture.py) loads and synthesizes the same samples it did then: bit for bit on the CPU it was
made on (an Intel Xeon with AMX), and within float32 rounding of another CPU's kernels elsewhere (an AMD EPYC moved
reconstructions by up to 5e-4 of their peak, peak-locked phases amplifying the last bits, and prior samples by 1e-5),
far under what a changed synthesis setting moves (tests/house/test_synthesis_methods.py).

Only the public API (audiovae.load and the Model's methods), so the package can move underneath it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import GENERATION_ROUNDING, RECONSTRUCTION_ROUNDING

import audiovae

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
FIXTURE_DIR = FIXTURES / "v0.2-spectrogram"
SAMPLE_RATE = 16000  # the fixture recipe's data.sample_rate


def assert_same_samples(actual: np.ndarray, expected: np.ndarray, rounding: float) -> None:
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, rtol=0, atol=rounding * np.abs(expected).max())


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
    assert_same_samples(model.reconstruct(expected["input"]), expected["reconstruction"], RECONSTRUCTION_ROUNDING)


def test_the_v0_2_run_generates_the_same_samples_from_its_learned_prior_by_default(model, expected):
    learned = np.stack(model.generate(2, seconds=0.5, seed=3))
    assert learned.shape == (2, 8000)
    assert_same_samples(learned, expected["generated_learned"], GENERATION_ROUNDING)
    # the default really is the learned prior: N(0, I) with the same seed gives another sound
    assert not np.array_equal(expected["generated_learned"][0], expected["generated_gaussian"][0])


def test_the_v0_2_run_generates_the_same_samples_from_the_gaussian_prior(model, expected):
    gaussian = np.stack(model.generate(1, seconds=0.5, seed=3, prior="gaussian"))
    assert_same_samples(gaussian, expected["generated_gaussian"], GENERATION_ROUNDING)


def test_the_v0_2_run_writes_the_same_wav_bytes(model, expected, tmp_path):
    source = tmp_path / "input.wav"
    sf.write(str(source), expected["input"], SAMPLE_RATE, subtype="FLOAT")
    written = model.reconstruct_file(source, tmp_path / "output.wav")
    if hashlib.sha256(written.read_bytes()).hexdigest() == str(expected["reconstruct_file_sha256"][0]):
        return  # the very bytes (on the CPU the fixture was made on)
    info = sf.info(str(written))  # elsewhere: the same format, and the samples within rounding and one 16-bit step
    assert (info.samplerate, info.channels, info.subtype, info.frames) == (SAMPLE_RATE, 1, "PCM_16",
                                                                          len(expected["reconstruction"]))
    samples, _ = sf.read(str(written), dtype="float32")
    peak = np.abs(expected["reconstruction"]).max()
    np.testing.assert_allclose(samples, expected["reconstruction"], rtol=0,
                               atol=RECONSTRUCTION_ROUNDING * peak + 1 / 32768)
