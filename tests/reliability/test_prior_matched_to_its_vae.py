"""Fault injection (issue 27): a learned prior is used only with the VAE it was trained on. The VAE is identified by
a hash of its weights (written into the prior's checkpoint by train-prior), not of its checkpoint file."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from audiovae.cli.main import main
from audiovae.io.checkpoint import load_checkpoint, save_checkpoint, weights_sha256
from audiovae.synthesis.model import load

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "v0.2-spectrogram"


@pytest.fixture
def run(tmp_path) -> Path:
    """A copy of the 0.2 spectrogram run and its learned prior (which records no VAE)."""
    return Path(shutil.copytree(FIXTURE, tmp_path / "run"))


def record(run: Path, identity: str | None) -> None:
    prior = run / "prior" / "best.pt"
    state = load_checkpoint(prior)
    state.pop("format", None), state.pop("format_version", None), state.pop("audiovae_version", None)
    save_checkpoint(prior, {**state, "vae_weights_sha256": identity})


def generate(run: Path, out: Path, *flags: str):
    return CliRunner().invoke(main, ["generate", str(out), "-n", "1", "--seconds", "0.05", "--run", str(run),
                                     *flags])


def test_a_prior_from_before_ids_is_used_with_a_warning(run, tmp_path):
    result = generate(run, tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert "does not record which VAE it was trained on" in result.stderr and "learned prior" in result.output


def test_the_matching_vae_loads_its_prior_silently_best_or_a_copy(run, tmp_path, capsys):
    state = load_checkpoint(run / "checkpoints" / "best.pt")
    record(run, weights_sha256(state.get("ema") or state.get("model")))
    shutil.copy(run / "checkpoints" / "best.pt", run / "checkpoints" / "last.pt")  # another file, the same weights
    model = load(run / "checkpoints" / "last.pt", device="cpu")
    assert model.learned_prior is not None and model.prior_refusal is None
    assert "warning" not in capsys.readouterr().err


def test_a_prior_of_another_vae_is_refused_in_one_line_where_it_would_be_used(run, tmp_path):
    record(run, "0" * 64)
    for command in (["generate", str(tmp_path / "g"), "-n", "1", "--seconds", "0.05"],
                    ["generate", str(tmp_path / "g"), "-n", "1", "--seconds", "0.05", "--prior", "learned"],
                    ["export", str(tmp_path / "e")]):
        result = CliRunner().invoke(main, [*command, "--run", str(run)])
        assert result.exit_code == 1, result.output
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "trained on another VAE (weights 000000000000" in lines[0], result.stderr
        assert "audiovae train-prior RUN, or pass --prior gaussian" in lines[0]
    assert generate(run, tmp_path / "gaussian", "--prior", "gaussian").exit_code == 0  # the way out it names


def test_a_vae_of_another_latent_size_is_refused_even_without_an_id(run, tmp_path):
    from audiovae.config.recipe import recipe_from_saved
    from audiovae.models import build_model

    vae = run / "checkpoints" / "best.pt"
    state = {k: v for k, v in load_checkpoint(vae).items() if k not in ("format", "format_version", "audiovae_version")}
    state["recipe"]["model"]["latent_size"] = 8  # another VAE, untrained: the prior draws 4 values per frame
    net = build_model(recipe_from_saved(state["recipe"]))
    save_checkpoint(vae, {**state, "model": net.state_dict(), "ema": None})
    model = load(run, device="cpu")
    assert model.learned_prior is None and "latent values per frame but the VAE has 8" in model.prior_refusal
    result = generate(run, tmp_path / "out")
    assert result.exit_code == 1 and "belongs to another model" in result.stderr and "Traceback" not in result.output


def test_commands_that_do_not_use_the_prior_do_not_warn_about_it(run, tmp_path):
    source = tmp_path / "voice.wav"
    CliRunner().invoke(main, ["generate", str(tmp_path / "g"), "-n", "1", "--prior", "gaussian", "--run", str(run)])
    shutil.copy(tmp_path / "g" / "sample_000.wav", source)
    result = CliRunner().invoke(main, ["reconstruct", str(source), str(tmp_path / "r"), "--run", str(run)])
    assert result.exit_code == 0 and "warning" not in result.stderr, result.output
