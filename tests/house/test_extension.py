"""Room to grow: a family, a second trainable model, a synthesis method, evaluation measures and old checkpoints,
each through the one home it has."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner
from torch import nn

import audiovae.models as models
from audiovae.cli.main import main
from audiovae.config.schema import require
from audiovae.dsp.inversion import SYNTHESIS_METHODS, PhaseRule, SynthesisConfig, SynthesisMethod
from audiovae.evaluation import measures
from audiovae.io.checkpoint import load_checkpoint
from audiovae.io.run_folder import RunFolder, resolve_checkpoint
from audiovae.models.base import VAE, Family, Posterior, split_posterior
from audiovae.nn.legacy_export import legacy_export
from audiovae.priors.base import GAUSSIAN
from audiovae.synthesis import model as synth
from audiovae.training.loop import EpochBatches, Hooks, TrainState, train_loop
from audiovae.training.losses import LossResult
from audiovae.training.vae_stage import train

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


# ---- a model family defined entirely in this file ----------------------------------------------------------


@dataclass(frozen=True)
class ToyConfig:
    family: str = "toy"
    latent_size: int = 2
    frame: int = 64  # samples per latent frame

    def __post_init__(self):
        require(self.frame >= 1, "frame", "must be positive")


class ToyVAE(VAE):
    """One linear map per frame each way."""

    def __init__(self, config: ToyConfig):
        super().__init__()
        self.hop, self.latent_size, self.input_channels = config.frame, config.latent_size, 1
        self.encoder = nn.Conv1d(1, 2 * config.latent_size, config.frame, stride=config.frame)
        self.decoder = nn.ConvTranspose1d(config.latent_size, 1, config.frame, stride=config.frame)

    def encode_frames(self, x: torch.Tensor) -> Posterior:
        return split_posterior(self.encoder(x))

    def decode_frames(self, z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.decoder(z))


def check_toy(recipe) -> None:
    require(recipe.training_samples % recipe.model.frame == 0, "model.frame", "must divide the training length")


TOY = Family("toy", ToyConfig, lambda recipe: ToyVAE(recipe.model), "wave", check_toy)


@pytest.fixture
def toy_family(monkeypatch):
    monkeypatch.setitem(models.FAMILIES, "toy", TOY)  # the one registry line, undone after the test


def test_a_family_registered_in_a_test_trains_saves_loads_and_generates(toy_family, tiny_recipe, tmp_path):
    raw = yaml.safe_load(tiny_recipe.read_text())
    raw["model"] = {"family": "toy", "latent_size": 3, "frame": 128}
    raw["loss"] = {"terms": {"mse": 1.0, "stft": 0.5}, "stft_windows": [256], "beta": 0.01, "beta_warmup_steps": 0}
    raw["train"]["max_steps"] = 2
    recipe = tmp_path / "toy.yaml"
    recipe.write_text(yaml.safe_dump(raw))
    result = train(recipe, runs_root=tmp_path / "runs", progress=False)
    assert (result.step, result.stopped) == (2, "finished")
    model = synth.load(result.run_dir)
    assert isinstance(model.net, ToyVAE) and model.frame_samples == 128
    sounds = model.generate(2, seconds=0.1, seed=4)
    assert [len(s) for s in sounds] == [1600, 1600] and all(np.isfinite(s).all() for s in sounds)
    assert np.array_equal(sounds[1], model.generate(1, seconds=0.1, seed=5)[0])
    metrics = [yaml.safe_load(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    train_line = next(m for m in metrics if m["split"] == "train")
    assert {"mse", "stft", "kl", "loss"} <= set(train_line)  # every term logged by its name


def test_a_family_check_names_its_key(toy_family, tiny_recipe, tmp_path):
    from audiovae.config.recipe import load_recipe
    from audiovae.errors import UserError

    raw = yaml.safe_load(tiny_recipe.read_text())
    raw["model"] = {"family": "toy", "frame": 100}  # 2048 samples are not whole frames of 100
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(UserError, match="model.frame: must divide the training length"):
        load_recipe(path)


# ---- a second trainable model (not a VAE) through the same state, step, loop and checkpoint -------------------


@dataclass(frozen=True)
class Schedule:
    max_steps: int = 6
    max_minutes: float | None = None
    valid_every: int = 3
    checkpoint_every: int = 2
    log_every: int = 1
    grad_clip: float = 0.0


def fit_line(folder: Path, max_steps: int, resume: bool = False) -> tuple[TrainState, list]:
    """Fit y = 3x - 1 with a tiny linear model using only audiovae.training.loop."""
    torch.manual_seed(0)
    xs = torch.linspace(-1, 1, 32)[:, None]
    ys = 3 * xs - 1
    model = nn.Linear(1, 1)
    state = TrainState(model, torch.optim.SGD(model.parameters(), lr=0.3))
    if resume:
        state.load_state_dict(load_checkpoint(folder / "last.pt"), torch.device("cpu"))
    epochs = EpochBatches(32, 8, seed=1)
    logged = []

    def batches(step):
        epoch, offset = divmod(step, epochs.steps_per_epoch)
        return ([xs[i] + 0.01 * torch.randn(len(i), 1), ys[i]] for i in map(torch.tensor, epochs.epoch(epoch, offset)))

    def loss(state, batch):
        x, y = batch
        error = (state.model(x) - y).square().mean()
        return LossResult(error, {"mse": error}, {"mse": 1.0})

    def validate(state):
        with torch.no_grad():
            error = (state.model(xs) - ys).square().mean().item()
        return {"loss": error, "score": error}

    hooks = Hooks(batches=batches, loss=loss, validate=validate,
                  save=lambda name: state.save(folder / f"{name}.pt", torch.device("cpu"), {"kind": "line"}),
                  log=lambda split, step, values: logged.append((split, step, values["loss"])), rates={},
                  failure_hint="lower the learning rate")
    stopped = train_loop(state, Schedule(max_steps=max_steps), hooks, "line", show_progress=False, announce=False)
    assert stopped == "finished"
    return state, logged


def test_a_second_model_trains_with_the_shared_step_loop_and_checkpoints(tmp_path):
    whole, logged = fit_line(tmp_path / "a", 12)
    assert logged[-1][2] < logged[0][2] / 4  # it learns
    assert whole.best_score is not None and (tmp_path / "a" / "best.pt").exists()
    saved = load_checkpoint(tmp_path / "a" / "last.pt")
    assert saved["kind"] == "line" and saved["step"] == 12
    fit_line(tmp_path / "b", 8)
    resumed, _ = fit_line(tmp_path / "b", 12, resume=True)  # noise draws continue where they stopped
    assert resumed.step == 12
    for a, b in zip(whole.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_a_non_finite_loss_stops_with_the_hint(tmp_path):
    model = nn.Linear(1, 1)
    state = TrainState(model, torch.optim.SGD(model.parameters(), lr=0.1))

    def loss(state, batch):
        value = model(batch).sum() * float("inf")
        return LossResult(value, {"nll": value}, {"nll": 1.0})

    hooks = Hooks(batches=lambda step: [torch.ones(2, 1)], loss=loss, validate=lambda s: {"loss": 0, "score": 0},
                  save=lambda name: None, log=lambda *a: None, rates={}, failure_hint="try X")
    from audiovae.errors import UserError

    with pytest.raises(UserError, match=r"^step 0: the loss became (-)?inf \(nll (-)?inf\); try X$"):
        train_loop(state, Schedule(), hooks, "x", show_progress=False)
    assert state.step == 0


# ---- the prior ----------------------------------------------------------------------------------------------


def test_the_gaussian_prior_draws_what_generate_decodes(tiny_run):
    model = synth.load(tiny_run)
    frames = model.frames_for(2048)
    z = GAUSSIAN.sample((1, model.latent_size, frames), 0.5, torch.Generator().manual_seed(7))
    assert torch.equal(z, 0.5 * torch.randn(1, model.latent_size, frames, generator=torch.Generator().manual_seed(7)))
    assert np.array_equal(model.generate(1, seed=7, temperature=0.5)[0], model.at_training_level(model.decode_all(z, 2048)[0]))


# ---- 0.1 checkpoints -------------------------------------------------------------------------------------------


def test_a_checkpoint_written_by_0_1_loads_and_synthesizes_the_same_sound():
    """The same samples to float32 rounding: 0.2 computes the PQMF synthesis in another order (as phases),
    which moves the last bit of some samples; a changed default or layer would move them by far more."""
    model = synth.load(FIXTURES / "v0.1-conv.pt", device="cpu")
    expected = np.load(FIXTURES / "v0.1-conv-outputs.npz")
    assert model.recipe.loss.terms == {"stft": 1.0, "log_mel": 1.0}  # the 0.1 keys, read as aliases
    np.testing.assert_allclose(model.reconstruct(expected["input"]), expected["reconstruction"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(model.generate(1, seconds=0.128, seed=3)[0], expected["generated"], rtol=0, atol=1e-6)


def test_a_run_of_0_1_resumes(tiny_dataset, tmp_path):
    run = tmp_path / "runs" / "v01"
    (run / "checkpoints").mkdir(parents=True)
    state = load_checkpoint(FIXTURES / "v0.1-conv.pt")
    state["recipe"]["data"]["folder"] = str(tiny_dataset)
    torch.save(state, run / "checkpoints" / "last.pt")
    recipe = tmp_path / "v01.yaml"
    plain = dict(state["recipe"])
    plain.pop("name")
    plain["train"]["max_steps"] = 4
    recipe.write_text(yaml.safe_dump(plain))
    result = train(recipe, resume=True, run_dir=run, progress=False)
    assert (result.step, result.stopped) == (4, "finished")
    assert "rng_ranks" in load_checkpoint(run / "checkpoints" / "last.pt")


# ---- review fixes ------------------------------------------------------------------------------------------


def test_run_and_checkpoint_together_are_refused(tiny_run, tmp_path):
    result = CliRunner().invoke(main, ["generate", "-n", "1", str(tmp_path / "o"), "--run", str(tiny_run),
                                       "--checkpoint", str(tiny_run / "checkpoints" / "last.pt")])
    assert result.exit_code == 1
    assert "--run and --checkpoint both name a model" in result.output
    assert not (tmp_path / "o").exists()


def test_interpolate_refuses_to_overwrite_before_any_work(tiny_run, tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / "interp_001.wav").write_bytes(b"mine")
    monkeypatch.setattr(synth, "load", lambda *a, **k: pytest.fail("loaded a model before refusing"))
    result = CliRunner().invoke(main, ["interpolate", "a.wav", "b.wav", str(out), "--steps", "3",
                                       "--run", str(tiny_run)])
    assert result.exit_code == 1 and "interp_001.wav: already exists" in result.output
    assert (out / "interp_001.wav").read_bytes() == b"mine"


def test_a_run_with_only_a_best_checkpoint_is_found(tiny_run, tmp_path):
    run = tmp_path / "runs" / "only-best"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "best.pt").write_bytes((tiny_run / "checkpoints" / "best.pt").read_bytes())
    assert RunFolder.all_in(tmp_path / "runs") == [RunFolder(run)]
    assert resolve_checkpoint(root=tmp_path / "runs") == run / "checkpoints" / "best.pt"


def test_latent_files_are_closed_and_say_samples_per_frame(tiny_run, tmp_path):
    from audiovae.synthesis.latent_files import load_latents, save_latents

    model = synth.load(tiny_run)
    latents = model.encode(np.sin(np.arange(3000) / 5.0).astype(np.float32))
    with _no_resource_warning():
        save_latents(tmp_path / "a.npy", latents, model, "a.wav")
    header = yaml.safe_load((tmp_path / "a.json").read_text())
    assert header["frame_samples"] == model.frame_samples and "hop_samples" not in header
    assert np.array_equal(load_latents(tmp_path / "a.npy", model).values, latents.values)


class _no_resource_warning:
    """Fail if an unclosed file is reported while the block runs."""

    def __enter__(self):
        import warnings

        self.catcher = warnings.catch_warnings(record=True)
        self.caught = self.catcher.__enter__()
        warnings.simplefilter("always", ResourceWarning)

    def __exit__(self, *exc):
        import gc

        gc.collect()
        self.catcher.__exit__(*exc)
        assert not [w for w in self.caught if issubclass(w.category, ResourceWarning)]


def test_interpolate_steps_below_two_is_one_line_before_any_work(tmp_path, monkeypatch):
    monkeypatch.setattr(synth, "load", lambda *a, **k: pytest.fail("loaded a model before refusing"))
    result = CliRunner().invoke(main, ["interpolate", "a.wav", "b.wav", str(tmp_path / "o"), "--steps", "1"])
    assert (result.exit_code, result.output) == (1, "error: --steps must be in 2..1000 (got 1)\n")
    assert not (tmp_path / "o").exists()


# ---- a synthesis method defined entirely in this file ---------------------------------------------------------


class QuarterTurns(PhaseRule):
    """Each frame a quarter turn on from the last, every bin alike: a method no recipe ships."""

    def forward(self, magnitude: torch.Tensor, first_frame: int) -> torch.Tensor:
        frames = torch.arange(first_frame, first_frame + magnitude.shape[-1], device=magnitude.device)
        return (0.5 * math.pi * frames.float()).expand_as(magnitude)


@pytest.fixture
def quarter_method(monkeypatch):
    # the one registry line, undone after the test
    monkeypatch.setitem(SYNTHESIS_METHODS, "quarter", SynthesisMethod("quarter", QuarterTurns, 1, "quarter turns"))


def test_a_synthesis_method_registered_in_a_test_is_a_recipe_key_synthesis_and_export_run(quarter_method):
    from audiovae.config.recipe import recipe_from_dict, recipe_from_saved
    from audiovae.realtime.export import scriptable

    recipe = recipe_from_dict({"data": {"features": "spectrogram", "segment_samples": 2048,
                                        "mel": {"n_fft": 256, "hop_length": 64}},
                               "model": {"family": "mel", "channels": 4, "max_channels": 4, "strides": [2],
                                         "latent_size": 3, "residual_layers": 1, "kernel_size": 3},
                               "loss": {"terms": {"l1": 1.0}}, "synthesis": {"method": "quarter"}}, "quarter")
    assert recipe.synthesis == SynthesisConfig("quarter", 1)  # the method's own iteration count, written down
    assert recipe_from_saved(recipe.to_dict()).synthesis == recipe.synthesis
    torch.manual_seed(0)
    model = synth.Model(models.build_model(recipe), recipe, Path("untrained.pt"), torch.device("cpu"), workers=1)
    z = torch.randn(1, 3, 6, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        frames = model.net.decode(z)
    wave = model.decode_all(z, 6 * 2 * 64)[0]
    assert np.array_equal(wave, model.representation.to_audio(frames, recipe.synthesis)[0].numpy())
    peaks = model.representation.to_audio(frames, SynthesisConfig("peaks", 1))[0].numpy()
    assert not np.allclose(wave, peaks, atol=1e-4)  # the method decides the sound
    face = scriptable(model.net, recipe)  # the export runs the same rule, scripted
    assert isinstance(face.back.phases, QuarterTurns)
    with legacy_export():
        scripted = torch.jit.script(face)
    with torch.no_grad():
        exported = scripted.decode(z)[0, 0].numpy()
    assert np.abs(exported - wave).max() < 0.05 * np.abs(wave).max()


# ---- evaluation measures defined entirely in this file --------------------------------------------------------


def peak_dbfs(wave: np.ndarray) -> float:
    peak = float(np.max(np.abs(wave))) if len(wave) else 0.0
    return 20 * math.log10(peak) if peak > 0 else float("nan")


@pytest.fixture
def peak_measures(monkeypatch):
    # one entry each, undone after the test: a measure of one sound per file, and a comparison per block
    monkeypatch.setitem(measures.SIGNALS, "peak", measures.Signal(
        "peak", "peak level dBFS", measures.SUBJECTS, "file", lambda setting: peak_dbfs))
    monkeypatch.setitem(measures.COMPARISONS, "peak_error", measures.Comparison(
        "peak_error", "peak error dB", lambda reference, estimate, rate: abs(peak_dbfs(reference) - peak_dbfs(estimate)),
        digits=1, candidates=("model", "mu-law reference")))


def test_measures_registered_in_a_test_appear_in_the_table_and_metrics(peak_measures, tiny_run):
    import csv
    import json

    result = CliRunner().invoke(main, ["evaluate", str(tiny_run), "-q", "--max-files", "2", "--no-perceptual"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tiny_run / "eval" / "metrics.json").read_text())
    peak = metrics["peak"]
    assert set(peak) == {"held-out", "model", "prior samples"}
    assert -60 < peak["held-out"] <= 0.5 and -80 < peak["prior samples"] <= 0.5
    assert metrics["reconstruction"]["model/peak_error"] >= 0
    assert "silence/peak_error" not in metrics["reconstruction"]
    assert "comb" in metrics and metrics["dnsmos"] is None  # the shipped ones as before
    line = next(line for line in result.output.splitlines() if line.startswith("peak level dBFS: "))
    assert line == (f"peak level dBFS: held-out {peak['held-out']:.2f}, reconstructions {peak['model']:.2f}, "
                    f"prior samples {peak['prior samples']:.2f}")
    assert "| reconstruction | mel distance | STFT distance | SI-SDR dB | PESQ-WB | STOI | peak error dB |" in result.output
    model_row = next(line for line in result.output.splitlines() if line.startswith("| model |"))
    assert model_row.endswith(f"| {metrics['reconstruction']['model/peak_error']:.1f} |")
    with open(tiny_run / "eval" / "metrics.csv") as handle:
        rows = dict(csv.reader(handle))
    assert "peak.prior samples" in rows and "reconstruction.model/peak_error" in rows
