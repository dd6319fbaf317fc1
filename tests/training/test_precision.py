"""train.precision: bf16 autocast for the training step where the hardware multiplies bf16 (CUDA, a CPU with AMX),
float32 elsewhere and for validation on a CPU; the run keeps its own on resume."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from conftest import write_frame_recipe

import audiovae.compute.device as device_module
import audiovae.training.vae_stage as train_module
from audiovae.compute.device import autocast_for, training_precision
from audiovae.config.recipe import load_recipe
from audiovae.data.dataset import SegmentDataset, open_dataset
from audiovae.errors import UserError
from audiovae.io.checkpoint import load_checkpoint
from audiovae.models import FAMILIES, build_model
from audiovae.training.vae_stage import bf16_agreement, choose_precision, train, validate

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


@pytest.mark.parametrize("units", [True, False])
def test_auto_is_bf16_on_cuda_and_on_a_cpu_with_bf16_units_only(monkeypatch, units):
    monkeypatch.setattr(device_module, "cpu_has_bf16_units", lambda: units)
    assert training_precision("auto", CPU) == ("bfloat16" if units else "float32")
    assert training_precision("auto", CUDA) == "bfloat16"
    for name in ("float32", "bfloat16"):  # a named precision is taken as it is, on either device
        assert training_precision(name, CPU) == training_precision(name, CUDA) == name


@pytest.mark.parametrize(("amx", "flags", "units"), [(True, set(), True), (False, {"avx512f", "avx512_bf16"}, True),
                                                     (False, {"avx512f", "avx512_vnni"}, False), (False, set(), False)])
def test_bf16_units_are_amx_tiles_or_avx512_bf16(monkeypatch, amx, flags, units):
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    monkeypatch.setattr(device_module, "cpu_flags", lambda: flags)
    assert device_module.cpu_has_bf16_units() is units


def test_cpu_flags_reads_this_machines_cpuinfo():
    flags = device_module.cpu_flags()
    if Path("/proc/cpuinfo").exists():
        assert {"fpu", "sse2"} <= flags or {"fp", "asimd"} <= flags  # x86-64 or aarch64
    else:
        assert flags == set()


def test_the_autocast_runs_a_convolution_in_the_precision_asked_for(monkeypatch):
    conv, x = torch.nn.Conv1d(3, 5, 3), torch.randn(2, 3, 16)
    with autocast_for(CPU, "bfloat16"):
        assert conv(x).dtype == torch.bfloat16
    with autocast_for(CPU, "float32"):
        assert conv(x).dtype == torch.float32
    # 'auto' alone never puts a CPU in bf16: that takes the family and the check (choose_precision)
    monkeypatch.setattr(device_module, "cpu_has_bf16_units", lambda: True)
    with autocast_for(CPU, "auto"):
        assert conv(x).dtype == torch.float32


def test_an_unknown_precision_is_one_error_naming_the_key(tiny_recipe):
    with pytest.raises(UserError, match="train.precision: must be one of"):
        load_recipe(tiny_recipe, ["train.precision=half"])


def test_validation_on_a_cpu_is_float32_whatever_the_training_precision(tiny_recipe, tiny_dataset):
    recipe = load_recipe(tiny_recipe)
    torch.manual_seed(0)
    model = build_model(recipe)
    arrays = open_dataset(tiny_dataset, recipe.data).arrays["valid"]
    segments = SegmentDataset(arrays, recipe.data.representation)
    batch = [torch.utils.data.default_collate([segments[i] for i in range(4)])]
    bf16 = validate(model, batch, recipe, 0, CPU, "bfloat16")
    fp32 = validate(model, batch, recipe, 0, CPU, "float32")
    assert bf16 == fp32


def test_a_bf16_run_trains_records_its_precision_and_keeps_it_on_resume(tiny_recipe, tmp_path, monkeypatch):
    seen = []
    real = train_module.vae_objective

    def spy(recipe, net, device, adversary, precision="auto"):
        seen.append(precision)
        return real(recipe, net, device, adversary, precision)

    monkeypatch.setattr(train_module, "vae_objective", spy)
    first = train(tiny_recipe, overrides=("train.precision=bfloat16", "train.max_steps=2"), runs_root=tmp_path,
                  progress=False)
    saved = load_checkpoint(first.run_dir / "checkpoints" / "last.pt")
    assert saved["precision"] == "bfloat16" and first.step == 2
    assert all(torch.isfinite(v).all() for v in saved["model"].values())
    # resumed under 'auto' on a machine that would pick float32: the run goes on in its own bf16
    monkeypatch.setattr(device_module, "cpu_has_bf16_units", lambda: False)
    resumed = train(tiny_recipe, overrides=("train.max_steps=4",), resume=True, runs_root=tmp_path, progress=False)
    assert resumed.step == 4 and seen[:2] == ["bfloat16", "bfloat16"]
    assert load_checkpoint(resumed.run_dir / "checkpoints" / "last.pt")["precision"] == "bfloat16"
    # and bit for bit where an unbroken bf16 run of 4 steps ends (the tiny recipe's learning rate is constant)
    unbroken = train(tiny_recipe, overrides=("train.precision=bfloat16", "train.max_steps=4"),
                     runs_root=tmp_path / "unbroken", progress=False)
    got, expected = (load_checkpoint(r.run_dir / "checkpoints" / "last.pt")["model"] for r in (resumed, unbroken))
    assert all(torch.equal(got[k], expected[k]) for k in expected)
    # a fresh run there is float32, and says so in its checkpoints
    fresh = train(tiny_recipe, overrides=("train.max_steps=2",), runs_root=tmp_path / "fresh", progress=False)
    assert seen[2:] == ["bfloat16", "float32"]
    assert load_checkpoint(fresh.run_dir / "checkpoints" / "last.pt")["precision"] == "float32"


@pytest.fixture()
def frame_model_and_batch(tmp_path):
    """The tiny frame model (the README main job's family) and a batch of log magnitudes: 4 segments of 16 frames."""
    recipe = load_recipe(write_frame_recipe(tmp_path / "frames.yaml", tmp_path / "unused"))
    torch.manual_seed(0)
    model = build_model(recipe)
    frames = torch.randn(4, recipe.data.representation.channels, 16, generator=torch.Generator().manual_seed(1)) - 5
    return recipe, model, frames


def test_bf16_agreement_of_a_frame_model_is_close_and_leaves_weights_and_random_state(frame_model_and_batch):
    recipe, model, frames = frame_model_and_batch
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    state = torch.get_rng_state()
    difference, cosine = bf16_agreement(recipe, model, frames, CPU)
    assert difference < 0.01 and cosine > 0.99
    assert all(torch.equal(v, weights[k]) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    assert torch.equal(torch.get_rng_state(), state)


def test_bf16_agreement_sees_a_model_that_bf16_computes_otherwise(frame_model_and_batch):
    """A decoder whose output is 3 nats off under autocast (what a broken bf16 kernel does) is caught."""
    recipe, model, frames = frame_model_and_batch
    model.decoder.register_forward_hook(lambda module, inputs, output: output + 3.0
                                        if torch.is_autocast_enabled("cpu") else output)
    difference, cosine = bf16_agreement(recipe, model, frames, CPU)
    assert difference > 0.1


@pytest.mark.parametrize("agreement, expected", [((0.001, 0.999), "bfloat16"), ((0.5, 0.999), "float32"),
                                                 ((0.001, 0.5), "float32")])
def test_auto_keeps_bf16_only_where_it_agrees_with_float32(frame_model_and_batch, monkeypatch, agreement, expected):
    recipe, model, frames = frame_model_and_batch
    monkeypatch.setattr(device_module, "cpu_has_bf16_units", lambda: True)
    monkeypatch.setattr(train_module, "bf16_agreement", lambda *args: agreement)
    precision, why = choose_precision(recipe, model, frames, CPU, None)
    assert precision == expected
    assert ("apart from float32" in why) == (expected == "float32")


def test_a_named_precision_or_a_resumed_runs_own_skips_the_check(frame_model_and_batch, monkeypatch):
    recipe, model, frames = frame_model_and_batch

    def never(*args):
        raise AssertionError("checked")

    monkeypatch.setattr(device_module, "cpu_has_bf16_units", lambda: True)
    monkeypatch.setattr(train_module, "bf16_agreement", never)
    named = dataclasses.replace(recipe, train=dataclasses.replace(recipe.train, precision="bfloat16"))
    assert choose_precision(named, model, frames, CPU, None)[0] == "bfloat16"
    assert choose_precision(recipe, model, frames, CPU, {"precision": "float32"})[0] == "float32"


def test_train_says_in_its_first_line_which_precision_it_chose_and_why(tiny_recipe, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(device_module, "cpu_has_bf16_units", lambda: True)
    monkeypatch.setitem(FAMILIES, "conv", dataclasses.replace(FAMILIES["conv"], cpu_bf16=True))  # as the frame family
    monkeypatch.setattr(train_module, "bf16_agreement", lambda *args: (0.5, 0.1))
    train(tiny_recipe, overrides=("train.max_steps=1",), runs_root=tmp_path / "a", progress=True)
    first = capsys.readouterr().err.splitlines()[0]
    assert first == ("training on cpu with 1 thread, float32 (bf16 autocast computed this model's loss 50.0% apart "
                     "from float32's, gradient cosine 0.100)")
    monkeypatch.setattr(train_module, "bf16_agreement", lambda *args: (0.0, 1.0))
    train(tiny_recipe, overrides=("train.max_steps=1",), runs_root=tmp_path / "b", progress=True)
    assert capsys.readouterr().err.splitlines()[0] == "training on cpu with 1 thread, bf16 autocast"


def test_on_a_cpu_auto_leaves_the_families_that_do_not_gain_in_float32_unchecked(tiny_recipe, monkeypatch):
    """The waveform family gains nothing from bf16 on a CPU (1.08x on this machine's AMX): auto keeps it in float32
    there without running the check; on CUDA it is checked as any family."""
    recipe = load_recipe(tiny_recipe)
    assert not FAMILIES[recipe.model.family].cpu_bf16 and FAMILIES["mel"].cpu_bf16

    def never(*args):
        raise AssertionError("checked")

    monkeypatch.setattr(device_module, "cpu_has_bf16_units", lambda: True)
    monkeypatch.setattr(train_module, "bf16_agreement", never)
    assert choose_precision(recipe, build_model(recipe), None, CPU, None) == ("float32", "")
    assert training_precision("auto", CUDA, cpu_bf16=False) == "bfloat16"
