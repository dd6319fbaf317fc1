"""`audiovae train`: run folders, checkpoint round trip, bit-exact resume, user errors, NaN guard, Ctrl-C,
data-parallel ranks and EMA, all on a tiny model over a tiny prepared dataset (see conftest.py)."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml
from click.testing import CliRunner

import audiovae.training.vae_stage as train_module
from audiovae.cli.main import main
from audiovae.config.recipe import load_recipe
from audiovae.data.dataset import open_dataset
from audiovae.errors import UserError
from audiovae.io.checkpoint import load_checkpoint
from audiovae.models import build_model
from audiovae.synthesis import model as synth
from audiovae.training.loop import learning_rate_scale
from audiovae.training.vae_stage import train

# random crop and gain: the augmentation draws must repeat exactly after a resume. Batch 8 over the 31
# training segments gives 3 steps per epoch, so a 4-step run crosses an epoch boundary after the resume.
AUGMENTED = ("train.gain_db=6", "train.crop_samples=1024", "train.batch_size=8")


def read_metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]


def checkpoint_of(run_dir: Path, name: str = "last") -> dict:
    return load_checkpoint(run_dir / "checkpoints" / f"{name}.pt")


def assert_same_tensors(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def on_training_step(monkeypatch, step: int, action) -> None:
    """Wrap the loss the training loop calls: at training step `step` (0-based), `action(loss)` replaces it.

    Validation calls the same function under no_grad; those calls pass through untouched.
    """
    real = train_module.vae_loss

    def wrapped(x, y, posterior, config, sample_rate, at_step):
        loss = real(x, y, posterior, config, sample_rate, at_step)
        return action(loss) if at_step == step and torch.is_grad_enabled() else loss

    monkeypatch.setattr(train_module, "vae_loss", wrapped)


def test_run_folder_holds_recipe_metrics_and_checkpoints(tiny_run, tiny_recipe):
    assert tiny_run.name == "tiny"
    assert load_recipe(tiny_run / "recipe.yaml") == dataclasses.replace(load_recipe(tiny_recipe), name="recipe")
    lines = read_metrics(tiny_run)
    train_lines = [line for line in lines if line["split"] == "train"]
    valid_lines = [line for line in lines if line["split"] == "valid"]
    assert [line["step"] for line in train_lines] == [1, 2, 3, 4]  # log_every 1
    assert [line["step"] for line in valid_lines] == [2, 4]  # valid_every 2
    for line in lines:
        numbers = [value for key, value in line.items() if key not in ("split", "step")]
        assert numbers and all(math.isfinite(value) for value in numbers), line
    assert all(line["loss"] > 0 and line["grad_norm"] > 0 for line in train_lines)
    last, best = checkpoint_of(tiny_run, "last"), checkpoint_of(tiny_run, "best")
    assert last["step"] == 4
    best_line = min(valid_lines, key=lambda line: line["score"])
    assert best["step"] == best_line["step"]
    assert last["best_score"] == pytest.approx(best_line["score"], abs=1e-5)
    assert all(torch.isfinite(t).all() for t in last["model"].values() if t.dtype.is_floating_point)


def test_second_run_gets_a_numbered_folder(tiny_recipe, tmp_path):
    one = ("train.max_steps=1",)
    first = train(tiny_recipe, overrides=one, runs_root=tmp_path, progress=False)
    second = train(tiny_recipe, overrides=one, runs_root=tmp_path, progress=False)
    assert (first.run_dir, second.run_dir) == (tmp_path / "tiny", tmp_path / "tiny-2")
    assert (second.run_dir / "checkpoints" / "last.pt").exists()


def test_checkpoint_round_trip_reproduces_outputs_bit_for_bit(tiny_recipe, tmp_path, monkeypatch, synthesize):
    built = []  # the networks train() builds: the first one is the model it trains

    def build_and_keep(recipe):
        built.append(build_model(recipe))
        return built[-1]

    monkeypatch.setattr(train_module, "build_model", build_and_keep)
    result = train(tiny_recipe, overrides=("train.max_steps=2",), runs_root=tmp_path, progress=False)
    trained = built[0].eval()
    loaded = synth.load(result.run_dir / "checkpoints" / "last.pt")
    assert loaded.recipe == load_recipe(tiny_recipe, ("train.max_steps=2",))
    for length in (2048, 3001):  # a whole number of latent frames, and not
        x = torch.from_numpy(synthesize(length / 16000, 16000, kind="mix", seed=length).T.copy())[None]
        with torch.no_grad():
            expected, got = trained(x), loaded.net(x)
        assert got.reconstruction.shape == (1, 1, length)
        assert torch.equal(got.reconstruction, expected.reconstruction)
        assert torch.equal(got.posterior.mean, expected.posterior.mean)
        assert torch.equal(got.posterior.logvar, expected.posterior.logvar)


def assert_same_run(got_dir: Path, expected_dir: Path) -> None:
    """Final weights, EMA, optimizer moments, best score and logged losses are equal bit for bit."""
    expected, got = checkpoint_of(expected_dir), checkpoint_of(got_dir)
    assert got["step"] == expected["step"]
    assert_same_tensors(got["model"], expected["model"])
    if expected["ema"] is not None:
        assert_same_tensors(got["ema"], expected["ema"])
    for slot_got, slot_expected in zip(got["optimizer"]["state"].values(), expected["optimizer"]["state"].values(),
                                       strict=True):
        assert_same_tensors(slot_got, slot_expected)
    assert got["best_score"] == expected["best_score"]

    def losses(run_dir):  # the log of the resumed run reads like the unbroken one (timings aside)
        return [(line["split"], line["step"], line["loss"]) for line in read_metrics(run_dir)]

    assert losses(got_dir) == losses(expected_dir)


def train_halves(recipe: Path, root: Path, augmentation: tuple[str, ...]) -> tuple[Path, Path]:
    """(run of 4 steps in one go, run of 2 steps resumed to 4)."""
    whole = train(recipe, overrides=(*augmentation, "train.max_steps=4"), runs_root=root / "a", progress=False)
    half = train(recipe, overrides=(*augmentation, "train.max_steps=2"), runs_root=root / "b", progress=False)
    assert half.step == 2
    resumed = train(recipe, overrides=(*augmentation, "train.max_steps=4"), resume=True, runs_root=root / "b",
                    progress=False)
    assert resumed.run_dir == half.run_dir and resumed.step == 4
    return whole.run_dir, resumed.run_dir


@pytest.mark.parametrize("augmentation", [(), AUGMENTED], ids=["plain", "crop-and-gain"])
def test_resume_equals_an_uninterrupted_run(tiny_recipe, tmp_path, augmentation):
    whole, resumed = train_halves(tiny_recipe, tmp_path, augmentation)
    assert_same_run(resumed, whole)


def test_resume_without_a_previous_run_is_a_user_error(tiny_recipe, tmp_path):
    with pytest.raises(UserError, match="no checkpoint to resume from"):
        train(tiny_recipe, resume=True, runs_root=tmp_path / "runs", progress=False)


def test_existing_run_dir_without_resume_is_a_user_error(tiny_recipe, tmp_path):
    run_dir = tmp_path / "mine"
    run_dir.mkdir()
    (run_dir / "notes.txt").write_text("keep me")
    with pytest.raises(UserError, match="--resume"):
        train(tiny_recipe, run_dir=run_dir, runs_root=tmp_path / "runs", progress=False)
    assert [p.name for p in run_dir.iterdir()] == ["notes.txt"]


def copy_dataset(tiny_dataset: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_dataset, tmp_path / "prepared"))


def run_suggested_prepare(message: str) -> None:
    """Run the `audiovae prepare ...` command an error message suggests, as the user would."""
    command = shlex.split(message.split("re-run: ", 1)[1])
    assert command[:2] == ["audiovae", "prepare"]
    result = CliRunner().invoke(main, [*command[1:], "-q", "--workers", "1"])
    assert result.exit_code == 0, result.output


def test_dataset_recipe_mismatch_names_the_prepare_command_that_fixes_it(tiny_dataset, tmp_path, write_tiny_recipe):
    folder = copy_dataset(tiny_dataset, tmp_path)
    recipe = write_tiny_recipe(tmp_path / "tiny22k.yaml", folder, sample_rate=22050)
    with pytest.raises(UserError) as error:
        train(recipe, runs_root=tmp_path / "runs", progress=False)
    message = str(error.value)
    assert "\n" not in message
    assert "sample_rate=16000" in message and "sample_rate=22050" in message
    assert "audiovae prepare" in message and f"--recipe {recipe}" in message
    assert not (tmp_path / "runs").exists()  # refused before a run folder was made
    run_suggested_prepare(message)
    assert open_dataset(folder, load_recipe(recipe).data).sample_rate == 22050


def test_mismatch_from_an_override_suggests_a_command_that_fixes_it(tiny_dataset, tmp_path, write_tiny_recipe):
    folder = copy_dataset(tiny_dataset, tmp_path)
    recipe = write_tiny_recipe(tmp_path / "tiny.yaml", folder)
    overrides = ("data.sample_rate=22050",)
    with pytest.raises(UserError) as error:
        train(recipe, overrides=overrides, runs_root=tmp_path / "runs", progress=False)
    run_suggested_prepare(str(error.value))
    open_dataset(folder, load_recipe(recipe, overrides).data)  # raises the same mismatch again


def test_missing_data_folder_says_to_run_prepare(tiny_recipe, tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(UserError, match="audiovae prepare") as error:
        train(tiny_recipe, overrides=(f"data.folder={missing}",), runs_root=tmp_path / "runs", progress=False)
    assert str(missing) in str(error.value)


def test_nan_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(tiny_recipe, tmp_path, monkeypatch):
    on_training_step(monkeypatch, 3, lambda loss: dataclasses.replace(loss, total=loss.total * float("nan")))
    with pytest.raises(UserError) as error:
        train(tiny_recipe, overrides=("train.max_steps=6",), runs_root=tmp_path, progress=False)
    message = str(error.value)
    assert message.startswith("step 3: the loss became nan")
    assert "train.learning_rate" in message and str(tmp_path / "tiny" / "checkpoints" / "last.pt") in message
    state = checkpoint_of(tmp_path / "tiny")
    assert state["step"] == 2  # checkpoint_every 2: written before the bad step
    assert all(torch.isfinite(t).all() for t in state["model"].values() if t.dtype.is_floating_point)
    assert synth.load(tmp_path / "tiny").generate(1)[0].shape == (2048,)


def interrupt_at(monkeypatch, step: int) -> None:
    def interrupt(loss):
        os.kill(os.getpid(), signal.SIGINT)  # as if the user pressed Ctrl-C during this step
        return loss

    on_training_step(monkeypatch, step, interrupt)


def test_ctrl_c_saves_a_checkpoint_and_resume_finishes(tiny_recipe, tmp_path, monkeypatch, capsys):
    overrides = ("train.max_steps=5",)
    whole = train(tiny_recipe, overrides=overrides, runs_root=tmp_path / "a", progress=False)
    handler_before = signal.getsignal(signal.SIGINT)
    interrupt_at(monkeypatch, 2)
    result = train(tiny_recipe, overrides=overrides, runs_root=tmp_path / "b", progress=False)
    assert (result.stopped, result.step) == ("interrupted", 3)  # the step in flight completes
    assert signal.getsignal(signal.SIGINT) is handler_before
    assert checkpoint_of(result.run_dir)["step"] == 3
    assert "Resume with: audiovae train" in capsys.readouterr().err
    valid_steps = [line["step"] for line in read_metrics(result.run_dir) if line["split"] == "valid"]
    assert valid_steps == [2, 3]  # the weights at the stop are scored too
    on_training_step(monkeypatch, 2, lambda loss: loss)
    resumed = train(tiny_recipe, overrides=overrides, resume=True, runs_root=tmp_path / "b", progress=False)
    assert (resumed.run_dir, resumed.step, resumed.stopped) == (result.run_dir, 5, "finished")
    assert checkpoint_of(result.run_dir)["step"] == 5
    train_steps = [line["step"] for line in read_metrics(result.run_dir) if line["split"] == "train"]
    assert train_steps == [1, 2, 3, 4, 5]
    model_whole, model_resumed = checkpoint_of(whole.run_dir)["model"], checkpoint_of(resumed.run_dir)["model"]
    assert_same_tensors(model_resumed, model_whole)


def stopped_at_step_3_then_resumed(recipe: Path, overrides: tuple[str, ...], root: Path, monkeypatch) -> Path:
    """The run folder of a run Ctrl-C'd during its third step, then resumed to its end."""
    interrupt_at(monkeypatch, 2)
    stopped = train(recipe, overrides=overrides, runs_root=root, progress=False)
    assert (stopped.stopped, stopped.step) == ("interrupted", 3)
    on_training_step(monkeypatch, 2, lambda loss: loss)
    return train(recipe, overrides=overrides, resume=True, runs_root=root, progress=False).run_dir


def test_learning_rate_holds_then_falls_to_its_final_share():
    assert [learning_rate_scale(p, 0.3, 0.05) for p in (0.0, 0.7, 0.85, 1.0, 1.2)] == pytest.approx(
        [1.0, 1.0, 0.525, 0.05, 0.05])
    assert learning_rate_scale(0.99, 0.0, 0.05) == 1.0  # no decay: constant


def test_learning_rate_decay_over_steps_is_logged_and_resumes_exactly(tiny_recipe, tmp_path, monkeypatch):
    overrides = ("train.max_steps=4", "train.lr_decay_fraction=0.5", "train.lr_final=0.1")
    whole = train(tiny_recipe, overrides=overrides, runs_root=tmp_path / "a", progress=False)
    rate = load_recipe(tiny_recipe).train.learning_rate
    logged = [line["learning_rate"] for line in read_metrics(whole.run_dir) if line["split"] == "train"]
    assert logged == pytest.approx([rate, rate, 0.55 * rate, 0.1 * rate])  # steps 1-4: progress 0.25 ... 1
    resumed = stopped_at_step_3_then_resumed(tiny_recipe, overrides, tmp_path / "b", monkeypatch)
    assert_same_tensors(checkpoint_of(resumed)["model"], checkpoint_of(whole.run_dir)["model"])
    constant = train(tiny_recipe, overrides=("train.max_steps=4",), runs_root=tmp_path / "c", progress=False)
    decayed, kept = checkpoint_of(whole.run_dir)["model"], checkpoint_of(constant.run_dir)["model"]
    assert any(not torch.equal(decayed[k], kept[k]) for k in kept)  # the schedule reached the optimizer


def test_ctrl_c_with_ema_then_resume_equals_an_uninterrupted_run(tiny_recipe, tmp_path, monkeypatch):
    overrides = ("train.max_steps=4", "train.ema_decay=0.9")
    whole = train(tiny_recipe, overrides=overrides, runs_root=tmp_path / "a", progress=False)
    resumed = stopped_at_step_3_then_resumed(tiny_recipe, overrides, tmp_path / "b", monkeypatch)
    assert_same_tensors(checkpoint_of(resumed)["model"], checkpoint_of(whole.run_dir)["model"])


@pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                    reason="torch.distributed with gloo is not available")
def test_two_process_data_parallel_ranks_end_with_the_same_weights(tiny_recipe, tmp_path):
    """...and rank 0 then trains the learned prior alone, and every rank exits cleanly (a process group left
    to the interpreter's teardown once aborted rank 1 after a finished run)."""
    raw = yaml.safe_load(tiny_recipe.read_text())
    raw["prior"] = {"kind": "gru", "hidden_size": 8, "layers": 1, "mixtures": 2, "sequence_frames": 4, "batch_size": 4,
                    "max_steps": 4, "max_minutes": None, "valid_every": 2, "checkpoint_every": 2}
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(yaml.safe_dump(raw))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "audiovae", "train", str(recipe), "--runs-root", str(tmp_path / "runs"), "-q",
               "--set", "train.max_steps=2"]
    done = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("finished at step 2") == 1  # rank 0 alone reports
    assert load_checkpoint(tmp_path / "runs" / "tiny" / "prior" / "best.pt")["latent_size"] == raw["model"]["latent_size"]
    lines = read_metrics(tmp_path / "runs" / "tiny")
    (ranks,) = [line for line in lines if line["split"] == "ranks"]
    assert ranks["step"] == 2
    assert ranks["weights_checksum_rank0"] == ranks["weights_checksum_rank1"]
    assert ranks["weights_checksum_rank0"] != 0.0
    assert [line["step"] for line in lines if line["split"] == "train"] == [1, 2]  # one writer
    assert checkpoint_of(tmp_path / "runs" / "tiny")["step"] == 2


def test_ema_weights_are_saved_and_used_for_synthesis(tiny_recipe, tmp_path):
    result = train(tiny_recipe, overrides=("train.max_steps=1", "train.ema_decay=0.9"), runs_root=tmp_path,
                   progress=False)
    state = checkpoint_of(result.run_dir)
    model, ema = state["model"], state["ema"]
    assert ema.keys() == model.keys()
    assert any(not torch.equal(ema[k], model[k]) for k in model)
    recipe = load_recipe(tiny_recipe)
    # after one step, ema = 0.9 * initial + 0.1 * trained; train seeds torch with train.seed before building
    torch.manual_seed(0)
    initial = build_model(recipe).state_dict()
    for key, value in model.items():
        if value.dtype.is_floating_point:
            torch.testing.assert_close(ema[key], 0.9 * initial[key] + 0.1 * value, rtol=1e-5, atol=1e-6)
    nets = {}
    for name in ("model", "ema"):
        nets[name] = build_model(recipe).eval()
        nets[name].load_state_dict(state[name])
    x = torch.linspace(-0.5, 0.5, 2048).sin()[None, None]
    with torch.no_grad():
        got = synth.load(result.run_dir / "checkpoints" / "last.pt").net(x).reconstruction
        assert torch.equal(got, nets["ema"](x).reconstruction)
        assert not torch.allclose(got, nets["model"](x).reconstruction)


def test_tensorboard_gets_scalars_audio_and_spectrograms(tiny_recipe, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = train(tiny_recipe, runs_root=tmp_path, progress=False).run_dir
    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"audio": 0, "images": 0}).Reload()
    tags = events.Tags()
    assert {"train/loss", "train/grad_norm", "valid/mel_distance"} <= set(tags["scalars"])
    assert {"samples/input", "samples/reconstruction", "samples/prior"} <= set(tags["audio"])
    assert "spectrogram/reconstruction" in tags["images"]
    assert [e.step for e in events.Scalars("valid/mel_distance")] == [2, 4]
    for name in ("input", "reconstruction", "prior"):  # and the same sounds as WAVs in the run folder
        assert sf.info(str(run / "samples" / f"{name}.wav")).frames == 2048


def test_adversarial_stage_starts_at_its_step_is_checkpointed_and_resumes_exactly(tiny_dataset, tmp_path,
                                                                                 write_tiny_recipe):
    adversarial = {"enabled": True, "start_step": 2, "windows": [256, 128], "channels": 4}
    recipe = write_tiny_recipe(tmp_path / "tiny.yaml", tiny_dataset)
    raw = yaml.safe_load(recipe.read_text())
    raw["adversarial"] = adversarial
    recipe.write_text(yaml.safe_dump(raw))
    whole, resumed = train_halves(recipe, tmp_path, ())
    lines = [x for x in read_metrics(whole) if x["split"] == "train"]
    assert [("discriminator" in x) for x in lines] == [False, False, True, True]  # steps 1-2 before the stage
    assert all(np.isfinite(x["adversarial"]) and x["feature_matching"] > 0 for x in lines[2:])
    state = checkpoint_of(whole)
    assert state["adversary"]["discriminator"] and state["adversary"]["optimizer"]["state"]
    assert_same_run(resumed, whole)
    for key, value in state["adversary"]["discriminator"].items():
        assert torch.equal(checkpoint_of(resumed)["adversary"]["discriminator"][key], value), key


# ---- the dataset under a run, and every rank's random state ----------------------------------------------------


def test_resume_refuses_a_dataset_prepared_again_with_other_settings(tiny_dataset, tmp_path, write_tiny_recipe):
    import shutil

    from audiovae.config.data import DataConfig
    from audiovae.data.prepare import prepare

    data = tmp_path / "data"
    shutil.copytree(tiny_dataset, data)
    recipe = write_tiny_recipe(tmp_path / "tiny.yaml", data)
    train(recipe, overrides=("train.max_steps=2",), runs_root=tmp_path / "runs", progress=False)
    manifest = json.loads((data / "manifest.json").read_text())
    sources = [Path(p) for p in manifest["inputs"]]
    # same sample rate and segment length (the recipe's check passes), other silence threshold and split
    prepare(sources, data, DataConfig(folder=str(data), segment_samples=2048, valid_fraction=0.5,
                                      silence_db=-30.0), workers=1, force=True, progress=False)
    with pytest.raises(UserError) as error:
        train(recipe, overrides=("train.max_steps=4",), resume=True, runs_root=tmp_path / "runs", progress=False)
    message = str(error.value)
    assert message.startswith(f"{data}: the dataset changed since this run started (")
    assert "silence_db -60.0 -> -30.0" in message and "valid_fraction 0.34 -> 0.5" in message
    assert checkpoint_of(tmp_path / "runs" / "tiny")["step"] == 2


def test_resume_accepts_the_same_audio_prepared_again(tiny_dataset, tmp_path, write_tiny_recipe):
    import shutil

    from audiovae.config.data import DataConfig
    from audiovae.data.prepare import prepare

    data = tmp_path / "data"
    shutil.copytree(tiny_dataset, data)
    recipe = write_tiny_recipe(tmp_path / "tiny.yaml", data)
    train(recipe, overrides=("train.max_steps=2",), runs_root=tmp_path / "runs", progress=False)
    sources = [Path(p) for p in json.loads((data / "manifest.json").read_text())["inputs"]]
    prepare(sources, data, DataConfig(folder=str(data), segment_samples=2048, valid_fraction=0.34), workers=1,
            force=True, progress=False)  # a new creation time, the same data
    assert train(recipe, overrides=("train.max_steps=4",), resume=True, runs_root=tmp_path / "runs",
                 progress=False).step == 4


@pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                    reason="torch.distributed with gloo is not available")
def test_resume_under_torchrun_restores_every_ranks_random_state(tiny_recipe, tmp_path):
    """Each rank draws its own posterior noise; resuming rank 1 with rank 0's random state changes the run."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def run(root: str, steps: int, *extra: str) -> None:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                   "-m", "audiovae", "train", str(tiny_recipe), "--runs-root", str(tmp_path / root), "-q",
                   "--set", f"train.max_steps={steps}", *extra]
        done = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]

    run("whole", 4)
    run("halves", 2)
    saved = checkpoint_of(tmp_path / "halves" / "tiny")
    assert len(saved["rng_ranks"]) == 2 and not torch.equal(saved["rng_ranks"][0]["torch"],
                                                            saved["rng_ranks"][1]["torch"])
    run("halves", 4, "--resume")
    assert_same_tensors(checkpoint_of(tmp_path / "halves" / "tiny")["model"],
                        checkpoint_of(tmp_path / "whole" / "tiny")["model"])


def test_a_changed_model_section_is_named_key_by_key_on_resume():
    from audiovae.config.recipe import load_recipe
    from audiovae.training.vae_stage import model_changes

    recipes = Path(__file__).resolve().parents[2] / "recipes"
    before = load_recipe(recipes / "quickstart.yaml", ["model.upsample=transposed"]).model
    after = load_recipe(recipes / "quickstart.yaml", ["model.latent_size=8"]).model
    assert model_changes(before, after) == "model.latent_size: 16 -> 8, model.upsample: transposed -> nearest"
    assert model_changes(before, load_recipe(recipes / "mel.yaml").model) == "model.family: conv -> mel"
