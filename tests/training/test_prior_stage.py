"""The learned prior as a run's stage: trains, resumes bit for bit, and drives generate of any length."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml
from click.testing import CliRunner

from audiovae.cli.main import main
from audiovae.errors import UserError
from audiovae.io.checkpoint import load_checkpoint
from audiovae.nn.legacy_export import legacy_export
from audiovae.priors.learned import PriorConfig
from audiovae.synthesis import model as synth
from audiovae.training.prior_stage import split_latents, train_prior
from audiovae.training.vae_stage import train


def retrain_prior(run: Path, config: PriorConfig, resume: bool = False):
    """The prior stage of a trained run, as `audiovae train-prior RUN` runs it: the VAE loaded on the CPU."""
    model = synth.load(run, device="cpu")
    return train_prior(model.run, model.net, model.recipe, model.checkpoint_sha256, config, resume=resume,
                       progress=False, vae_weights_sha256=model.weights_sha256)


TINY_PRIOR = {"kind": "gru", "hidden_size": 16, "layers": 1, "mixtures": 2, "sequence_frames": 8, "batch_size": 4,
              "max_steps": 40, "max_minutes": None, "valid_every": 10, "checkpoint_every": 10, "log_every": 5,
              "learning_rate": 0.01}


@pytest.fixture(scope="module")
def prior_run(tiny_recipe, tmp_path_factory) -> Path:
    """The tiny VAE (4 steps) with a tiny learned prior trained as its last stage."""
    raw = yaml.safe_load(tiny_recipe.read_text())
    raw["prior"] = TINY_PRIOR
    recipe = tmp_path_factory.mktemp("recipes") / "tinyprior.yaml"
    recipe.write_text(yaml.safe_dump(raw))
    result = train(recipe, runs_root=tmp_path_factory.mktemp("runs"), progress=False)
    assert result.prior is not None and result.prior.step == 40
    return result.run_dir


def test_the_prior_stage_learns_and_writes_its_checkpoints(prior_run):
    saved = load_checkpoint(prior_run / "prior" / "best.pt")
    assert saved["latent_size"] == 4 and saved["prior_config"]["hidden_size"] == 16
    lines = [json.loads(x) for x in (prior_run / "prior" / "metrics.jsonl").read_text().splitlines()]
    valid = [x for x in lines if x["split"] == "valid"]
    assert [x["step"] for x in valid] == [10, 20, 30, 40]
    assert valid[-1]["loss"] < valid[-1]["gaussian_nll"]  # held-out NLL below N(0, I)'s on the same latents
    assert synth.load(prior_run).learned_prior is not None


def test_prior_resume_is_bit_exact(prior_run):
    config = PriorConfig(**{**TINY_PRIOR, "max_steps": 20})
    whole = retrain_prior(prior_run, config)
    weights = load_checkpoint(whole.folder / "last.pt")["model"]
    assert retrain_prior(prior_run, PriorConfig(**{**TINY_PRIOR, "max_steps": 10})).step == 10
    resumed = retrain_prior(prior_run, config, resume=True)  # 10 more steps, as one run of 20
    assert resumed.step == 20
    again = load_checkpoint(whole.folder / "last.pt")["model"]
    assert all(torch.equal(weights[k], again[k]) for k in weights)
    changed = PriorConfig(**{**TINY_PRIOR, "hidden_size": 8})
    with pytest.raises(UserError, match="the prior's model settings changed"):
        retrain_prior(prior_run, changed, resume=True)
    retrain_prior(prior_run, PriorConfig(**TINY_PRIOR))  # leave the module's run as the others expect


def test_generate_uses_the_learned_prior_and_is_deterministic(prior_run, tmp_path):
    model = synth.load(prior_run)
    learned = model.generate(2, seconds=0.3, seed=5)
    assert [len(w) for w in learned] == [4800, 4800] and all(np.isfinite(w).all() for w in learned)
    assert np.array_equal(learned[1], model.generate(2, seconds=0.3, seed=5)[1])  # same seed, same samples
    # sound i is seed + i at any batch size (batched matrix products may differ in the last float bit)
    np.testing.assert_allclose(learned[1], model.generate(1, seconds=0.3, seed=6, batch_size=1)[0], atol=1e-5)
    gaussian = model.generate(1, seconds=0.3, seed=5, prior="gaussian")[0]
    assert not np.array_equal(learned[0], gaussian)
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["generate", "-n", "2", "--seconds", "0.3", "--seed", "5", str(out),
                                       "--run", str(prior_run)])
    assert result.exit_code == 0, result.output
    assert "learned prior" in result.output
    data, rate = sf.read(out / "sample_000.wav", dtype="float32")
    assert rate == 16000 and len(data) == 4800
    np.testing.assert_allclose(data, learned[0], atol=1 / 32768 + 1e-6)  # the file is the 16-bit array
    assert json.loads((out / "samples.json").read_text())["prior"] == "learned"


def test_long_generation_streams_in_bounded_memory_and_stays_alive(prior_run, tmp_path):
    model = synth.load(prior_run)
    from audiovae.synthesis.generate import choose_prior, generate_files

    path = tmp_path / "long.wav"
    samples = generate_files(model, [path], 60.0, 1.0, 0, choose_prior(model, "learned"))
    wave, _ = sf.read(path, dtype="float32")
    assert samples == len(wave) == 60 * 16000
    train_wave = np.concatenate([model.decode(z) for z in split_latents(model.net, model.recipe, "train")])
    window = 8000  # 0.5 s: the tiny corpus's files are shorter than the 5-s windows of the real check

    def loudness_and_flatness(x):
        blocks = x[: len(x) // window * window].reshape(-1, window)
        rms = 20 * np.log10(np.sqrt(np.mean(blocks**2, axis=1)) + 1e-9)
        spectrum = np.abs(np.fft.rfft(blocks, axis=1)) + 1e-9
        flatness = np.exp(np.mean(np.log(spectrum), axis=1)) / np.mean(spectrum, axis=1)
        return rms, flatness

    rms, flat = loudness_and_flatness(wave / np.abs(wave).max())
    ref_rms, ref_flat = loudness_and_flatness(train_wave / np.abs(train_wave).max())
    assert rms.min() > ref_rms.min() - 12 and rms.max() < ref_rms.max() + 12  # no fade to silence, no blow-up
    assert flat.max() < max(2 * ref_flat.max(), 0.5)  # no collapse into white noise (flatness 1)


@pytest.mark.parametrize(("prompt", "expected"), [
    ("silent", "the prompt is silent"),
    ("short", "shorter than one latent frame (64 samples at 16000 Hz)"),
    ("garbage", "not readable as audio"),
])
def test_bad_prompts_are_one_line_naming_the_file(prior_run, tmp_path, prompt, expected):
    path = tmp_path / f"{prompt}.wav"
    if prompt == "silent":
        sf.write(path, np.zeros(4000, np.float32), 16000)
    elif prompt == "short":
        sf.write(path, 0.5 * np.ones(40, np.float32), 16000)
    else:
        path.write_bytes(b"not audio at all")
    result = CliRunner().invoke(main, ["generate", "-n", "1", str(tmp_path / "o"), "--run", str(prior_run),
                                       "--prompt", str(path)])
    assert result.exit_code == 1
    assert result.output.startswith(f"error: {path}: ") and expected in result.output
    assert "\n" not in result.output.strip()


def test_a_prompt_is_continued(prior_run, tmp_path, synthesize):
    path = tmp_path / "prompt.wav"
    sf.write(path, synthesize(0.25, 22050, kind="chirp", frequency=200.0, stop_frequency=3000.0), 22050)
    result = CliRunner().invoke(main, ["generate", "-n", "1", "--seconds", "0.5", str(tmp_path / "o"),
                                       "--run", str(prior_run), "--prompt", str(path)])
    assert result.exit_code == 0, result.output
    assert "resampled from 22050 Hz" in result.output
    out, _ = sf.read(tmp_path / "o" / "sample_000.wav", dtype="float32")
    model = synth.load(prior_run)
    wave = model.load_audio(path)
    usable = len(wave) // 64 * 64
    assert len(out) == usable + 8000  # the prompt's whole frames, then 0.5 s of new material
    start = model.reconstruct(wave[:usable])[: usable - 16 * 64]  # away from the join's context margin
    correlation = np.corrcoef(start, out[: len(start)])[0, 1]
    assert correlation > 0.99


def test_learned_prior_without_one_is_refused_with_the_command(tiny_run, tmp_path):
    result = CliRunner().invoke(main, ["generate", "-n", "1", str(tmp_path / "o"), "--run", str(tiny_run),
                                       "--prior", "learned"])
    assert result.exit_code == 1
    assert f"this run has no learned prior; train one with: audiovae train-prior {tiny_run}" in result.output


def test_train_prior_on_a_run_whose_dataset_is_gone(tiny_run, tmp_path):
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(tiny_run, run)
    saved = load_checkpoint(run / "checkpoints" / "best.pt")
    saved["recipe"]["data"]["folder"] = str(tmp_path / "gone")
    torch.save(saved, run / "checkpoints" / "best.pt")
    result = CliRunner().invoke(main, ["train-prior", str(run), "-q"])
    assert result.exit_code == 1
    assert "no manifest.json" in result.output and "prepare it again with the run's recipe" in result.output


def test_export_of_a_run_with_a_prior_adds_the_prior_method(prior_run, tmp_path):
    result = CliRunner().invoke(main, ["export", str(prior_run), str(tmp_path / "export")])
    assert result.exit_code == 0, result.output
    assert "encode/decode/forward/prior.onnx" in result.output
    card = json.loads((tmp_path / "export" / "card.json").read_text())
    assert card["methods"][-1] == "prior" and (tmp_path / "export" / "prior.onnx").is_file()
    with legacy_export():
        module = torch.jit.load(str(tmp_path / "export" / "model.ts"))
    z = module.prior(torch.ones(2, 1, 5))
    assert z.shape == (2, card["latent_size"], 5) and torch.isfinite(z).all()


def test_the_prior_records_its_vaes_weights_and_loads_without_a_warning(prior_run, capsys):
    from audiovae.io.checkpoint import load_checkpoint

    model = synth.load(prior_run, device="cpu")
    saved = load_checkpoint(model.run.prior.checkpoint_to_load("best"))
    assert saved["vae_weights_sha256"] == model.weights_sha256 and model.learned_prior is not None
    assert "warning" not in capsys.readouterr().err
