"""What decides a run's sound is stored in the run: the recipe's synthesis section selects a method, a new run's
recipe.yaml and checkpoints carry it, and runs saved without one (0.1, 0.2) keep the method they were made with
whatever the code's default becomes."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import RECONSTRUCTION_ROUNDING, write_signal

import audiovae
from audiovae.config.data import DataConfig, MelConfig
from audiovae.config.recipe import load_recipe, recipe_from_dict, recipe_from_saved
from audiovae.data.prepare import prepare
from audiovae.data.representations import LogMel, LogSpectrogram
from audiovae.dsp.inversion import SYNTHESIS_METHODS, SynthesisConfig
from audiovae.dsp.inversion.advancing import AdvancingPhases
from audiovae.errors import UserError
from audiovae.io.checkpoint import load_checkpoint
from audiovae.io.run_folder import RunFolder
from audiovae.realtime.export import scriptable
from audiovae.training.vae_stage import train

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
OTHER_DEFAULT = {"method": "advancing", "iterations": 3, "momentum": 0.5}  # what a later version might pick


def digest(*arrays: np.ndarray) -> str:
    return hashlib.sha256(b"".join(np.ascontiguousarray(a, np.float32).tobytes() for a in arrays)).hexdigest()


def fixture_outputs(path: Path, tone: np.ndarray) -> str:
    """The hash of a fixture run's reconstruction of `tone` and its generated sounds, at one torch thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = audiovae.load(path, device="cpu")
        return digest(model.reconstruct(tone), *model.generate(2, seconds=0.25, seed=3))
    finally:
        torch.set_num_threads(threads)


def frame_recipe(features: str) -> dict:
    return {"data": {"features": features}, "model": {"family": "mel", "strides": [2]}, "loss": {"terms": {"l1": 1.0}}}


@pytest.fixture
def another_default(monkeypatch):
    """The code's defaults for new recipes changed to another method, for both frame representations."""
    monkeypatch.setattr(LogSpectrogram, "synthesis_default", OTHER_DEFAULT)
    monkeypatch.setattr(LogMel, "synthesis_default", OTHER_DEFAULT)


def test_a_changed_default_changes_new_recipes(another_default):
    for features in ("mel", "spectrogram"):
        recipe = recipe_from_dict(frame_recipe(features), "new")
        assert recipe.synthesis == SynthesisConfig(**OTHER_DEFAULT)


@pytest.mark.parametrize("fixture", ["v0.2-spectrogram", "v0.1-conv.pt"])
def test_a_changed_default_leaves_the_fixture_runs_bytes_unchanged(fixture, monkeypatch):
    expected = np.load(FIXTURES / "v0.2-spectrogram-outputs.npz")
    tone = expected["input"]
    before = fixture_outputs(FIXTURES / fixture, tone)
    monkeypatch.setattr(LogSpectrogram, "synthesis_default", OTHER_DEFAULT)
    monkeypatch.setattr(LogMel, "synthesis_default", OTHER_DEFAULT)
    for name, method in list(SYNTHESIS_METHODS.items()):  # and every method's own iteration count
        monkeypatch.setitem(SYNTHESIS_METHODS, name, dataclasses.replace(method, iterations=method.iterations + 5))
    assert fixture_outputs(FIXTURES / fixture, tone) == before
    if fixture == "v0.2-spectrogram":  # the bytes it synthesized when it was made, too
        model = audiovae.load(FIXTURES / fixture, device="cpu")
        assert model.recipe.synthesis == SynthesisConfig("peaks", 0, 0.99)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            # within another CPU's float32 rounding (tests/house/test_v0_2_run_fixture.py); bit for bit where made
            reconstruction = model.reconstruct(tone)
            np.testing.assert_allclose(reconstruction, expected["reconstruction"], rtol=0,
                                       atol=RECONSTRUCTION_ROUNDING * np.abs(expected["reconstruction"]).max())
        finally:
            torch.set_num_threads(threads)
    else:  # a waveform model: nothing to synthesize, and its recipe says so
        assert audiovae.load(FIXTURES / fixture, device="cpu").recipe.synthesis is None


def test_saved_recipes_without_the_section_resolve_to_the_legacy_method(another_default):
    for features, legacy in (("mel", ("zeros", 32)), ("spectrogram", ("peaks", 0))):
        plain = recipe_from_dict(frame_recipe(features), "old").to_dict()
        del plain["synthesis"]  # as 0.1 and 0.2 wrote them
        assert recipe_from_saved(plain).synthesis == SynthesisConfig(*legacy, 0.99)


@pytest.fixture(scope="module")
def spectrogram_data(tmp_path_factory) -> Path:
    """Three tones and chirps prepared as 129-bin log-spectrogram frames (n_fft 256, hop 64)."""
    root = tmp_path_factory.mktemp("frames")
    for i, (kind, frequency) in enumerate((("sine", 220.0), ("chirp", 100.0), ("sine", 660.0))):
        write_signal(root / "audio" / f"s{i}.wav", 0.6, 16000, kind=kind, frequency=frequency, stop_frequency=3000.0)
    data = DataConfig(folder=str(root / "prepared"), features="spectrogram", segment_samples=2048,
                      valid_fraction=0.34, mel=MelConfig(n_fft=256, hop_length=64))
    prepare([root / "audio"], root / "prepared", data, workers=1, progress=False)
    return root / "prepared"


def test_a_recipe_key_selects_the_method_and_the_run_stores_it(spectrogram_data, tmp_path):
    raw = {"data": {"folder": str(spectrogram_data), "features": "spectrogram", "segment_samples": 2048,
                    "valid_fraction": 0.34, "mel": {"n_fft": 256, "hop_length": 64}},
           "model": {"family": "mel", "channels": 4, "max_channels": 4, "strides": [2], "latent_size": 3,
                     "residual_layers": 1, "kernel_size": 3, "activation": "leaky_relu"},
           "loss": {"terms": {"l1": 1.0}},
           "synthesis": {"method": "advancing", "iterations": 2},
           "train": {"batch_size": 2, "max_steps": 2, "valid_every": 2, "valid_batches": 1, "checkpoint_every": 2,
                     "num_threads": 1, "device": "cpu"}}
    path = tmp_path / "frames.yaml"
    path.write_text(yaml.safe_dump(raw))
    result = train(path, runs_root=tmp_path / "runs", progress=False)
    run = RunFolder(result.run_dir)
    stored = {"method": "advancing", "iterations": 2, "momentum": 0.99, "noise_level": 0.0}
    assert yaml.safe_load(run.recipe_path.read_text())["synthesis"] == stored
    for name in ("best", "last"):
        assert load_checkpoint(run.checkpoint(name))["recipe"]["synthesis"] == stored
    model = audiovae.load(result.run_dir, device="cpu")
    assert model.recipe.synthesis == SynthesisConfig("advancing", 2)
    # synthesis in Python runs the stored method: the same sound as inverting the decoded frames by it
    z = torch.randn(1, 3, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        frames = model.net.decode(z)
    by_method = model.representation.to_audio(frames, SynthesisConfig("advancing", 2))[0].numpy()
    by_default = model.representation.to_audio(frames, SynthesisConfig(**LogSpectrogram.synthesis_default))[0]
    assert np.array_equal(model.decode_all(z, by_method.shape[-1])[0], by_method)
    assert not np.allclose(by_method, by_default.numpy(), atol=1e-3)
    # and so does the export
    face = scriptable(model.net, model.recipe)
    assert isinstance(face.back.phases, AdvancingPhases) and face.back.iterations == 2


def test_the_section_is_checked_like_every_section(tmp_path):
    spectrogram = Path(__file__).resolve().parents[2] / "recipes" / "spectrogram.yaml"
    with pytest.raises(UserError, match=r"synthesis\.iteratons: unknown key \(did you mean 'iterations'\?\)"):
        load_recipe(spectrogram, ["synthesis.iteratons=3"])
    with pytest.raises(UserError, match="synthesis.method: must be one of zeros, advancing, peaks"):
        load_recipe(spectrogram, ["synthesis.method=random"])
    with pytest.raises(UserError, match="synthesis.iterations: must be >= 0"):
        load_recipe(spectrogram, ["synthesis.iterations=-1"])
    # a method without iterations takes its own count, and the resolved recipe writes it down
    assert load_recipe(spectrogram, ["synthesis={method: advancing}"]).synthesis == SynthesisConfig("advancing", 8)
    quickstart = spectrogram.parent / "quickstart.yaml"
    with pytest.raises(UserError, match="synthesis: waveform models .* have no synthesis method"):
        load_recipe(quickstart, ["synthesis.method=peaks"])
