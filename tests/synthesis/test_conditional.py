"""Conditional generation by label (issue 31): a tiny frame model trained on two synthetic classes (steady tones
and noise bursts) makes, for each label, sounds closer to its own class than to the other; and an unconditional
recipe still trains and generates the same bytes as before conditioning existed."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from audiovae.errors import UserError
from tests.conftest import TINY_RATE, write_frame_recipe, write_signal, write_two_classes

# made at the commit before conditioning existed (db6709b) by this very test: the run's recipe.yaml, the best
# checkpoint's weights, the learned prior's weights and two generated sounds, at one torch thread
# the digest per CPU (float32 kernels round differently): the Intel Xeon with AMX where it was pinned before
# conditioning existed, and an AMD EPYC (AVX-512 BF16, no AMX) at commit 6606bac, whose digest on the Intel one
# was still the first
UNCONDITIONAL_SHA256 = {"e189f49b75f8f85113a025556bebad6a32b80275b8e0896c7d23d526afbd80f8",
                        "423427b7e866140b49ef4db783991c6d99ef39fe297449be8c1431fabfc3cb2d"}


def test_an_unconditional_recipe_trains_and_generates_the_same_bytes_as_before(tmp_path, monkeypatch):
    import torch

    import audiovae
    from audiovae.config.recipe import load_recipe
    from audiovae.data.prepare import prepare
    from audiovae.dsp import transforms
    from audiovae.io.checkpoint import load_checkpoint, weights_sha256
    from audiovae.training.vae_stage import train

    audio = write_two_classes(tmp_path / "audio", files=2)
    recipe = write_frame_recipe(tmp_path / "frames.yaml", tmp_path / "data")
    prepare([audio], tmp_path / "data", load_recipe(recipe).data, workers=1, progress=False)
    # float32 as then (train.precision exists since 0.3 round 8; 'auto' trains in bf16 on a CPU with AMX)
    result = train(recipe, overrides=("train.precision=float32",), runs_root=tmp_path / "runs", progress=False)
    run = result.run_dir
    digest = hashlib.sha256()
    # the resolved recipe has stored synthesis.noise_level, train.precision, the flow prior's prior.couplings and
    # prior.group_frames, and train.transpose_semitones since they exist (0.3 rounds 6, 8, 10 and 17): those lines
    # aside, the run's bytes are still those made before conditioning
    resolved = (run / "recipe.yaml").read_bytes().replace(str(tmp_path).encode(), b"TMP")
    for line in (b"  noise_level: 0.0\n", b"  precision: float32\n", b"  couplings: 8\n", b"  group_frames: 8\n",
                 b"  transpose_semitones: 0.0\n"):
        assert line in resolved
        resolved = resolved.replace(line, b"")
    digest.update(resolved)
    digest.update(weights_sha256(load_checkpoint(run / "checkpoints" / "best.pt")["model"]).encode())
    digest.update(weights_sha256(load_checkpoint(run / "prior" / "best.pt")["model"]).encode())
    torch.set_num_threads(1)
    # synthesis overlap-adds in its own passes since 0.3 round 12, torch.istft's samples to rounding
    # (tests/data/test_spectrogram_representation.py); the digest was made with torch.istft itself
    monkeypatch.setattr(transforms, "inverse_stft", lambda spectrum, n_fft, hop_length, window, length: torch.istft(
        spectrum, n_fft, hop_length, window=window, length=length))
    # and its spectrum from cos and sin since round 16, torch.polar's to rounding (the same test file)
    monkeypatch.setattr(transforms, "polar", torch.polar)
    sounds = np.stack(audiovae.load(run, device="cpu").generate(2, seconds=0.25, seed=1))
    digest.update(sounds.astype(np.float32).tobytes())
    assert digest.hexdigest() in UNCONDITIONAL_SHA256, digest.hexdigest()


def mean_log_spectrum(wave: np.ndarray) -> np.ndarray:
    """The mean log power over 512-sample frames, (257,): what tells a tone from noise."""
    frames = np.lib.stride_tricks.sliding_window_view(wave, 512)[::256] * np.hanning(512)
    return np.log(np.abs(np.fft.rfft(frames, axis=-1)) ** 2 + 1e-6).mean(0)


def test_each_label_generates_sounds_closer_to_its_own_class(conditional_run, tmp_path):
    import audiovae

    model = audiovae.load(conditional_run, device="cpu")
    assert model.labels == ("noise", "tone")
    classes = {"tone": write_two_classes(tmp_path / "reference", files=2) / "tone",
               "noise": tmp_path / "reference" / "noise"}
    reference = {name: np.mean([mean_log_spectrum(model.load_audio(p)) for p in sorted(folder.glob("*.wav"))], 0)
                 for name, folder in classes.items()}
    for label in ("tone", "noise"):
        sounds = model.generate(4, seconds=0.5, seed=0, label=label)
        spectrum = np.mean([mean_log_spectrum(s) for s in sounds], 0)
        own = np.sqrt(np.mean((spectrum - reference[label]) ** 2))
        other = np.sqrt(np.mean((spectrum - reference[({"tone", "noise"} - {label}).pop()]) ** 2))
        # ignoring the label, both labels would draw the same sounds, and they could not both be nearer their own
        # class; measured: tone 4.1 against 11.9, noise 3.9 against 11.5 (dB-like log-power units)
        assert own < 0.5 * other, (label, own, other)


def invoke(*args: str | Path):
    from click.testing import CliRunner

    from audiovae.cli.main import main

    return CliRunner().invoke(main, [str(a) for a in args])


def test_generate_takes_labels_in_turn_and_records_them(conditional_run, tmp_path):
    import json

    result = invoke("generate", "-n", 3, "--seconds", 0.25, tmp_path / "out", "--run", conditional_run)
    assert result.exit_code == 0, result.output
    assert "labels noise, tone in turn" in result.output  # said (on stderr, which the runner mixes in)
    files = json.loads((tmp_path / "out" / "samples.json").read_text())["files"]
    assert [f["label"] for f in files] == ["noise", "tone", "noise"]
    result = invoke("generate", "-n", 2, "--seconds", 0.25, tmp_path / "tones", "--run", conditional_run,
                    "--label", "tone")
    assert result.exit_code == 0, result.output
    files = json.loads((tmp_path / "tones" / "samples.json").read_text())["files"]
    assert [f["label"] for f in files] == ["tone", "tone"]


def test_a_long_conditional_generate_shows_its_progress_in_sounds(conditional_run, tmp_path):
    """Under labels each sound is drawn alone (seed + i under its label): more than 20 s of audio in all shows a
    progress bar counting sounds, as an unconditional generate's counts samples; a short job stays quiet."""
    long = invoke("generate", "-n", 3, "--seconds", 7.0, tmp_path / "long", "--run", conditional_run)
    assert long.exit_code == 0, long.output
    assert "generate: 100%" in long.output and "3/3" in long.output
    short = invoke("generate", "-n", 2, "--seconds", 0.25, tmp_path / "short", "--run", conditional_run)
    assert short.exit_code == 0 and "generate:" not in short.output, short.output


def test_sound_i_is_the_same_whether_drawn_alone_or_in_turn(conditional_run):
    import audiovae

    model = audiovae.load(conditional_run, device="cpu")
    in_turn = model.generate(2, seconds=0.25, seed=5)  # noise (seed 5), tone (seed 6)
    assert np.array_equal(in_turn[1], model.generate(1, seconds=0.25, seed=6, label="tone")[0])
    assert not np.array_equal(model.generate(1, seconds=0.25, seed=6, label="noise")[0], in_turn[1])


def test_reconstruct_under_a_label_and_label_transfer(conditional_run, tmp_path):
    import soundfile as sf

    source = write_signal(tmp_path / "kick.wav", 0.5, TINY_RATE, kind="sine", frequency=300.0)
    result = invoke("reconstruct", source, tmp_path / "out", "--run", conditional_run, "--from-label", "tone",
                    "--label", "noise")
    assert result.exit_code == 0, result.output
    wave, rate = sf.read(tmp_path / "out" / "kick.wav")
    assert rate == TINY_RATE and len(wave) == TINY_RATE // 2


@pytest.mark.parametrize(("args", "message"), [
    (("--label", "snare"), "--label snare: unknown label; this run knows noise, tone"),
])
def test_an_unknown_label_is_one_line_naming_the_known_ones(conditional_run, tmp_path, args, message):
    result = invoke("generate", "-n", 1, tmp_path / "out", "--run", conditional_run, *args)
    assert result.exit_code == 1 and result.output.strip().endswith(message), result.output
    result = invoke("reconstruct", tmp_path / "none.wav", tmp_path / "rec", "--run", conditional_run)
    assert result.exit_code == 1 and "this run is conditional; give a label (--label), one of: noise, tone" \
        in result.output, result.output


def test_a_label_on_an_unconditional_run_is_one_line(tiny_run, tmp_path):
    result = invoke("generate", "-n", 1, tmp_path / "out", "--run", tiny_run, "--label", "kick")
    assert result.exit_code == 1 and "is not conditional (trained without labels)" in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1


def test_conditioning_on_an_unlabelled_dataset_names_the_prepare_command(tmp_path):
    from audiovae.config.recipe import load_recipe
    from audiovae.data.prepare import prepare

    audio = write_two_classes(tmp_path / "audio", files=2)
    recipe = write_frame_recipe(tmp_path / "frames.yaml", tmp_path / "data", conditional=True)
    prepare([audio], tmp_path / "data", load_recipe(recipe).data, workers=1, progress=False)
    result = invoke("train", recipe, "--runs-root", tmp_path / "runs", "-q")
    assert result.exit_code == 1, result.output
    assert "model.conditional needs a labelled dataset; prepare it with: audiovae prepare AUDIO_DIR --labels " \
        "folders" in result.output


def test_a_dataset_prepared_again_with_other_labels_is_one_line_for_the_prior():
    """train-prior reads a conditional run's dataset: one prepared again with other labels is refused by name."""
    from audiovae.training.prior_stage import check_dataset_labels

    check_dataset_labels({"labels": ["noise", "tone"]}, ("noise", "tone"), "data/x")  # the run's labels: fine
    check_dataset_labels({}, (), "data/x")  # an unconditional run reads any dataset
    for manifest, shown in (({"labels": ["kick", "tone"]}, "kick, tone"), ({}, "none")):
        with pytest.raises(UserError, match=rf"data/x: its labels \({shown}\) are not the run's \(noise, tone\); "
                                            "prepare it again as the run was"):
            check_dataset_labels(manifest, ("noise", "tone"), "data/x")
