"""Synthesis from a trained run: generate, encode/decode, chunked reconstruct, interpolate, and their CLI
commands, on the tiny model of conftest.py (4 training steps, 64 samples per latent frame, latent size 4)."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner, Result

import audiovae.synthesis.model as synth
from audiovae.cli.main import main
from audiovae.errors import UserError
from audiovae.io.audio import normalize

RATE = 16000
HOP = 64  # 4 bands x strides 4, 4
LATENT = 4
PEAK = 10.0 ** (-1.0 / 20.0)  # generated sounds are peak-normalized to -1 dBFS, as the training data
PCM16 = 1.0 / 32768  # one step of a 16-bit WAV


@pytest.fixture(scope="module")
def model(tiny_run) -> synth.Model:
    return synth.load(tiny_run)


def tone(synthesize, samples: int, kind: str = "mix", frequency: float = 330.0, seed: int = 0) -> np.ndarray:
    return synthesize(0, RATE, kind=kind, frequency=frequency, frames=samples, seed=seed)[:, 0]


def invoke(*args: str | Path) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_ok(result: Result) -> None:
    assert result.exit_code == 0, (result.output, result.exception)


def one_line_error(result: Result) -> str:
    """The CLI's user-error contract: exit code 1 and a single 'error: ...' line on stderr."""
    assert result.exit_code == 1, (result.output, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def read_wav(path: Path) -> np.ndarray:
    samples, rate = sf.read(str(path), dtype="float32")
    assert rate == RATE
    return samples


# ---- generate ---------------------------------------------------------------------------------------------


def test_model_facts(model):
    assert (model.sample_rate, model.frame_samples, model.latent_size) == (RATE, HOP, LATENT)
    assert model.compression_ratio() == HOP / LATENT


def test_generate_lengths_default_to_one_segment(model):
    sounds = model.generate(3)
    assert len(sounds) == 3
    assert all(s.shape == (2048,) and s.dtype == np.float32 for s in sounds)
    for seconds in (0.3, 0.1234567, 1 / RATE):
        (sound,) = model.generate(1, seconds=seconds)
        assert sound.shape == (round(seconds * RATE),)


def test_generate_zero_seconds_is_a_user_error(model):
    with pytest.raises(UserError, match="--seconds"):
        model.generate(1, seconds=0.0)


def test_generate_seeds(model):
    first, again = model.generate(2, seed=5), model.generate(2, seed=5)
    for a, b in zip(first, again, strict=True):
        assert np.array_equal(a, b)
    shifted = model.generate(1, seed=6)[0]
    np.testing.assert_allclose(shifted, first[1], atol=1e-5)  # sound i uses seed + i, whatever the batch
    assert np.abs(shifted - first[0]).max() > 1e-3


def test_generate_at_temperature_zero_decodes_the_prior_mean(model):
    (sound,) = model.generate(1, temperature=0.0, seed=3)
    assert np.array_equal(sound, model.generate(1, temperature=0.0, seed=99)[0])
    zeros = model.decode(np.zeros((LATENT, 2048 // HOP), np.float32), 2048)  # at the training level
    np.testing.assert_allclose(sound, normalize(zeros, "peak", -1.0), atol=1e-6)
    assert np.abs(sound).max() == pytest.approx(PEAK, abs=1e-6)


def test_generate_batch_size_does_not_change_the_sounds(model):
    one_at_a_time = model.generate(5, seed=1, batch_size=1)
    batched = model.generate(5, seed=1, batch_size=4)
    for a, b in zip(one_at_a_time, batched, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_no_sample_reaches_full_scale(model):
    for sound in model.generate(3, temperature=5.0):
        assert np.abs(sound).max() == pytest.approx(PEAK, abs=1e-6)
    loud = model.decode(np.full((LATENT, 20), 50.0, np.float32))
    assert loud.shape == (20 * HOP,) and np.abs(loud).max() <= 0.999 + 1e-7


# ---- generate from the command line -------------------------------------------------------------------------


def test_cli_generate_writes_wavs_and_a_manifest(model, tiny_run, tmp_path):
    out = tmp_path / "out"
    result = invoke("generate", "-n", "3", out, "--run", tiny_run)
    assert_ok(result)
    assert "wrote 3 sounds" in result.stdout
    sounds = model.generate(3)
    for i, expected in enumerate(sounds):
        info = sf.info(str(out / f"sample_{i:03d}.wav"))
        assert (info.samplerate, info.frames, info.channels) == (RATE, 2048, 1)
        np.testing.assert_allclose(read_wav(out / f"sample_{i:03d}.wav"), expected, atol=PCM16)
    manifest = json.loads((out / "samples.json").read_text())
    checkpoint = tiny_run / "checkpoints" / "best.pt"
    assert manifest["checkpoint"] == str(checkpoint)
    assert manifest["checkpoint_sha256"] == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert [f["seed"] for f in manifest["files"]] == [0, 1, 2]
    assert [f["file"] for f in manifest["files"]] == ["sample_000.wav", "sample_001.wav", "sample_002.wav"]
    assert manifest["sample_rate"] == RATE

    again = tmp_path / "again"
    assert_ok(invoke("generate", "-n", "3", again, "--run", tiny_run))
    for i in range(3):
        name = f"sample_{i:03d}.wav"
        assert (again / name).read_bytes() == (out / name).read_bytes()


def test_cli_generate_refuses_to_overwrite_without_force(tiny_run, tmp_path):
    out = tmp_path / "out"
    assert_ok(invoke("generate", "-n", "2", out, "--run", tiny_run, "--seed", "1"))
    before = (out / "sample_000.wav").read_bytes()
    line = one_line_error(invoke("generate", "-n", "2", out, "--run", tiny_run))
    assert "already exists" in line and "--force" in line
    assert (out / "sample_000.wav").read_bytes() == before
    assert_ok(invoke("generate", "-n", "2", out, "--run", tiny_run, "--force"))
    assert (out / "sample_000.wav").read_bytes() != before  # seed 0 now, not 1


def test_cli_generate_without_runs_says_to_train(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert "audiovae train" in one_line_error(invoke("generate", "-n", "1", "out"))
    (tmp_path / "runs").mkdir()
    assert "audiovae train" in one_line_error(invoke("generate", "-n", "1", "out"))
    assert not (tmp_path / "out").exists()


def test_cli_generate_with_a_bad_checkpoint_is_one_line(tmp_path):
    bad = tmp_path / "model.pt"
    bad.write_text("not a checkpoint\n")
    assert str(bad) in one_line_error(invoke("generate", "-n", "1", tmp_path / "out", "--checkpoint", bad))


def test_cli_generate_plot_writes_pngs(tiny_run, tmp_path):
    assert_ok(invoke("generate", "-n", "2", tmp_path, "--run", tiny_run, "--plot"))
    for i in range(2):
        assert (tmp_path / f"sample_{i:03d}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---- encode, decode, reconstruct ------------------------------------------------------------------------------


@pytest.mark.parametrize("samples", [1, HOP - 1, HOP, HOP + 1, 3001])
def test_encode_then_decode_is_reconstruct_at_any_length(model, synthesize, samples):
    wave = tone(synthesize, samples)
    latents = model.encode(wave)
    assert latents.values.shape == (LATENT, -(-samples // HOP)) and latents.samples == samples
    decoded = model.decode(latents)
    assert decoded.shape == (samples,)
    np.testing.assert_allclose(decoded, model.reconstruct(wave), atol=1e-7)


def test_reconstruct_restores_the_input_level(model, synthesize):
    wave = tone(synthesize, 4096)
    loud, quiet = model.reconstruct(wave), model.reconstruct(0.1 * wave)
    np.testing.assert_allclose(quiet, 0.1 * loud, atol=1e-6)  # same latents, output scaled like the input


def test_chunked_reconstruct_matches_a_single_pass(model, synthesize, monkeypatch):
    wave = tone(synthesize, 40 * 8 * HOP + 37)  # 40 chunks of 8 latent frames, and a partial one
    monkeypatch.setattr(synth, "CHUNK_FRAMES", 10**9)
    whole, whole_latents = model.reconstruct(wave), model.encode(wave).values
    monkeypatch.setattr(synth, "CHUNK_FRAMES", 8)
    chunked, chunked_latents = model.reconstruct(wave), model.encode(wave).values
    assert chunked.shape == wave.shape
    assert np.abs(chunked_latents - whole_latents).max() < 1e-6
    assert np.abs(chunked - whole).max() < 1e-6  # float rounding only, at every join
    monkeypatch.setattr(synth, "MARGIN_FRAMES", 0)  # without context the joins do show: the test can fail
    assert np.abs(model.reconstruct(wave) - whole).max() > 1e-3


@pytest.fixture
def two_threads():
    """torch at two threads (the tests run at one), so that a worker's count leaking out would show."""
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(1)


def test_chunks_shared_among_cpu_workers_give_the_same_sound(tiny_run, synthesize, monkeypatch, two_threads):
    one, two = synth.load(tiny_run, device="cpu", workers=1), synth.load(tiny_run, device="cpu", workers=2)
    frames = 2 * synth.SPLIT_FRAMES + 5
    assert [c[:2] for c in two.chunks(frames)] == [(0, 131), (131, 261)]  # one chunk per worker
    assert len(list(one.chunks(frames))) == 1
    threads = torch.get_num_threads()
    wave = tone(synthesize, frames * HOP)
    np.testing.assert_allclose(two.reconstruct(wave), one.reconstruct(wave), atol=1e-6)
    seconds = frames * HOP / RATE
    np.testing.assert_allclose(two.generate(2, seconds, seed=4)[1], one.generate(2, seconds, seed=4)[1], atol=1e-6)
    # the workers set their thread counts for themselves only: the caller and new threads keep torch's
    fresh: list[int] = []
    thread = threading.Thread(target=lambda: fresh.append(torch.get_num_threads()))
    thread.start()
    thread.join()
    assert threads == 2 and torch.get_num_threads() == 2 and fresh == [2]
    # a sound of one chunk is decoded on the caller's thread (with all its threads), a split one on the workers
    names, decode = [], two.net.decode
    monkeypatch.setattr(two.net, "decode", lambda z: (names.append(threading.current_thread().name), decode(z))[1])
    two.generate(1, 0.5)
    assert names == [threading.current_thread().name]
    names.clear()
    two.generate(1, seconds)
    assert len(names) == 2 and all(name.startswith("audiovae") for name in names)
    monkeypatch.setattr(synth, "MARGIN_FRAMES", 0)  # the split is real: without context its join shows
    assert np.abs(two.reconstruct(wave) - one.reconstruct(wave)).max() > 1e-3


def test_a_mel_models_sound_is_not_split_among_workers(tmp_path):
    """Griffin-Lim makes each chunk's phase on its own, so a split would put a seam in every sound."""
    from audiovae.config.recipe import load_recipe
    from audiovae.models import build_model

    recipe = load_recipe("recipes/mel.yaml", overrides=("model.channels=4", "model.max_channels=8"))
    model = synth.Model(build_model(recipe), recipe, tmp_path / "none.pt", torch.device("cpu"), workers=2)
    assert [c[:2] for c in model.chunks(600)] == [(0, 600)]


def test_cli_encode_and_decode_round_trip(model, tiny_run, tmp_path, write_signal):
    source = write_signal("in/voice.wav", 0.3, RATE, kind="chirp", frequency=200.0, stop_frequency=3000.0)
    result = invoke("encode", source, tmp_path / "latents", "--run", tiny_run)
    assert_ok(result)
    assert f"compression {HOP / LATENT:.1f}x" in result.stdout
    wave = model.load_audio(source)
    values = np.load(tmp_path / "latents" / "voice.npy")
    assert values.shape == (LATENT, -(-4800 // HOP)) and values.dtype == np.float32
    np.testing.assert_allclose(values, model.encode(wave).values, atol=1e-7)
    header = json.loads((tmp_path / "latents" / "voice.json").read_text())
    assert (header["samples"], header["frame_samples"], header["latent_size"]) == (4800, HOP, LATENT)
    assert header["checkpoint_sha256"] == model.checkpoint_sha256

    assert_ok(invoke("decode", tmp_path / "latents" / "voice.npy", tmp_path / "decoded", "--run", tiny_run))
    decoded = read_wav(tmp_path / "decoded" / "voice.wav")
    assert decoded.shape == (4800,)
    np.testing.assert_allclose(decoded, model.reconstruct(wave), atol=PCM16)


def test_cli_decode_of_latents_of_another_size_is_one_line(tiny_run, tmp_path):
    np.save(tmp_path / "other.npy", np.zeros((LATENT + 1, 10), np.float32))
    line = one_line_error(invoke("decode", tmp_path / "other.npy", tmp_path / "out", "--run", tiny_run))
    assert "do not fit" in line and "other.npy" in line


def test_cli_reconstruct_of_a_file_that_is_not_audio_names_it(tiny_run, tmp_path):
    notes = tmp_path / "notes.wav"
    notes.write_text("these are words, not samples\n")
    assert str(notes) in one_line_error(invoke("reconstruct", notes, tmp_path / "out", "--run", tiny_run))


def test_cli_reconstruct_writes_whole_files(model, tiny_run, tmp_path, write_signal):
    source = write_signal("in/long.wav", 0.7, RATE, kind="mix")
    assert_ok(invoke("reconstruct", source, tmp_path / "out", "--run", tiny_run))
    output = read_wav(tmp_path / "out" / "long.wav")
    np.testing.assert_allclose(output, model.reconstruct(model.load_audio(source)), atol=PCM16)


# ---- interpolate ------------------------------------------------------------------------------------------


def test_interpolate_endpoints_are_the_reconstructions(model, synthesize):
    a, b = tone(synthesize, 3000, "chirp", 200.0), tone(synthesize, 3000, "sine", 300.0)
    sounds = model.interpolate(a, b, steps=5)
    assert len(sounds) == 5 and all(s.shape == (3000,) for s in sounds)
    np.testing.assert_allclose(sounds[0], model.reconstruct(a), atol=1e-5)
    np.testing.assert_allclose(sounds[-1], model.reconstruct(b), atol=1e-5)
    assert np.abs(sounds[2] - sounds[0]).max() > 1e-3 and np.abs(sounds[2] - sounds[-1]).max() > 1e-3
    linear = model.interpolate(a, b, steps=3, method="linear")
    np.testing.assert_allclose(linear[0], sounds[0], atol=1e-5)


def test_interpolate_crops_to_the_shorter_input(model, synthesize):
    long, short = tone(synthesize, 5000, "chirp", 200.0), tone(synthesize, 3001, "sine", 300.0)
    for a, b in ((long, short), (short, long)):
        sounds = model.interpolate(a, b, steps=3)
        assert all(s.shape == (3001,) for s in sounds)
    # the shorter input's endpoint is its own reconstruction, exactly
    np.testing.assert_allclose(model.interpolate(long, short, steps=3)[-1], model.reconstruct(short), atol=1e-5)
    # the longer one's matches its reconstruction up to the last few latent frames before the crop
    first = model.interpolate(long, short, steps=3)[0]
    edge = 3001 - 8 * HOP
    np.testing.assert_allclose(first[:edge], model.reconstruct(long)[:edge], atol=1e-5)


def test_interpolate_endpoint_of_the_longer_input_is_its_reconstruction(model, synthesize):
    long, short = tone(synthesize, 5000, "chirp", 200.0), tone(synthesize, 3001, "sine", 300.0)
    first = model.interpolate(long, short, steps=3)[0]
    cropped_output, of_cropped_input = model.reconstruct(long)[:3001], model.reconstruct(long[:3001])
    assert np.allclose(first, cropped_output, atol=1e-4) or np.allclose(first, of_cropped_input, atol=1e-4)


def test_interpolate_needs_two_steps(model, synthesize):
    wave = tone(synthesize, 1000)
    with pytest.raises(UserError, match="--steps"):
        model.interpolate(wave, wave, steps=1)


# ---- the whole pipeline from the command line ----------------------------------------------------------------


def test_cli_prepare_train_generate(tmp_path, write_signal, write_tiny_recipe, torch_one_thread):
    for i, (kind, frequency) in enumerate([("sine", 220.0), ("chirp", 150.0), ("sine", 660.0)]):
        write_signal(f"audio/sound_{i}.wav", 1.0, RATE, kind=kind, frequency=frequency, stop_frequency=4000.0)
    prepared = invoke("prepare", tmp_path / "audio", "-o", tmp_path / "data", "-q", "--workers", "1",
                      "--segment-samples", "2048", "--valid-fraction", "0.34")
    assert_ok(prepared)
    assert "3 files" in prepared.stdout
    recipe = write_tiny_recipe(tmp_path / "pipeline.yaml", tmp_path / "data", max_steps=2)
    trained = invoke("train", recipe, "--runs-root", tmp_path / "runs", "-q")
    assert_ok(trained)
    assert trained.stdout.startswith("finished at step 2")
    run = tmp_path / "runs" / "pipeline"
    assert trained.stdout.splitlines()[1:] == [f"next: audiovae generate -n 10 out/ --run {run}",
                                               f"next: audiovae report --run {run}"]
    generated = invoke("generate", "-n", "2", tmp_path / "out", "--run", tmp_path / "runs" / "pipeline")
    assert_ok(generated)
    for i in range(2):
        sound = read_wav(tmp_path / "out" / f"sample_{i:03d}.wav")
        assert sound.shape == (2048,) and np.isfinite(sound).all()
        assert np.abs(sound).max() == pytest.approx(PEAK, abs=2 * PCM16)


def test_cli_refuses_two_inputs_that_would_share_an_output(tiny_run, tmp_path, write_signal):
    first = write_signal("x/a.wav", 0.3, 16000)
    second = write_signal("y/a.wav", 0.3, 16000, frequency=220.0)
    result = CliRunner().invoke(main, ["reconstruct", str(first), str(second), str(tmp_path / "out"),
                                       "--run", str(tiny_run)])
    assert "would both be written to" in one_line_error(result)
    assert not (tmp_path / "out").exists()


def test_cli_output_folder_that_is_a_file_is_one_line(tiny_run, tmp_path, write_signal):
    source = write_signal("a.wav", 0.3, 16000)
    other = write_signal("b.wav", 0.3, 16000)
    result = CliRunner().invoke(main, ["reconstruct", str(source), str(other), "--run", str(tiny_run)])
    assert "is not a folder" in one_line_error(result)


def test_cli_plot_of_a_very_short_sound(tiny_run, tmp_path):
    result = CliRunner().invoke(main, ["generate", "-n", "1", "--seconds", "0.02", "--plot", str(tmp_path / "o"),
                                       "--run", str(tiny_run)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "o" / "sample_000.png").stat().st_size > 0


def test_outputs_get_the_usual_permissions_not_the_temp_files_private_ones(tiny_run, tmp_path):
    import os

    umask = os.umask(0)
    os.umask(umask)
    result = CliRunner().invoke(main, ["generate", "-n", "1", str(tmp_path / "o"), "--run", str(tiny_run)])
    assert result.exit_code == 0, result.output
    for name in ("sample_000.wav", "samples.json"):
        assert (tmp_path / "o" / name).stat().st_mode & 0o777 == 0o666 & ~umask, name


def test_level_stats_reads_blocks_and_any_sample_type(tmp_path):
    from audiovae.io.audio import level_stats

    rng = np.random.default_rng(0)
    wave = (0.1 * rng.standard_normal(70_000)).astype(np.float32)
    wave[12_345] = -0.75
    mapped = np.lib.format.open_memmap(tmp_path / "wave.npy", mode="w+", dtype=np.float32, shape=wave.shape)
    mapped[:] = wave
    peak, rms = level_stats(mapped, block=1 << 12)  # 18 blocks, the last one short
    assert peak == 0.75
    assert rms == pytest.approx(float(np.sqrt(np.mean(wave.astype(np.float64) ** 2))), rel=1e-12)
    assert level_stats(np.array([3, -32768, 7], np.int16))[0] == 32768.0  # no wrap-around in abs
