"""Fault injection: killed and interrupted training, hostile model files, and a corpus of bad inputs.

Each test states a promise from docs/reliability.md and breaks something on purpose to check it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner
from conftest import TINY_RATE, write_signal, write_tiny_recipe

from audiovae.cli.main import main
from audiovae.config.data import DataConfig
from audiovae.data.prepare import prepare
from audiovae.errors import UserError
from audiovae.io.checkpoint import CHECKPOINT_VERSION, load_checkpoint, save_checkpoint
from audiovae.training.vae_stage import train

# A stand-in for `audiovae` that kills itself at a chosen moment, the way a crash, an OOM killer or a
# pre-empted cluster job would: `python fault.py MODE N -- audiovae arguments...`
FAULT_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    import torch
    import audiovae.training.vae_stage as train_module
    mode, at = sys.argv[1], int(sys.argv[2])
    calls = {"n": 0}
    if mode in ("kill-at-loss", "sigint-at-loss"):
        original_loss = train_module.vae_loss
        def vae_loss(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] == at:
                os.kill(os.getpid(), signal.SIGKILL if mode == "kill-at-loss" else signal.SIGINT)
            return original_loss(*args, **kwargs)
        train_module.vae_loss = vae_loss
    elif mode == "kill-in-checkpoint-write":
        original_save = torch.save
        def save(obj, f, *args, **kwargs):
            calls["n"] += 1
            if calls["n"] == at:
                with open(f, "wb") as handle:   # half a file, then the power goes
                    handle.write(b"PK\\x03\\x04" + b"\\0" * 1000)
                    handle.flush()
                os.kill(os.getpid(), signal.SIGKILL)
            return original_save(obj, f, *args, **kwargs)
        torch.save = save
    torch.set_num_threads(1)
    from audiovae.cli.main import main
    sys.argv = ["audiovae", *sys.argv[4:]]
    main()
""")

STEPS = 6  # checkpoints every 2 steps (write_tiny_recipe)


def run_faulty(tmp_path: Path, mode: str, at: int, *args: str) -> subprocess.CompletedProcess:
    script = tmp_path / "fault.py"
    script.write_text(FAULT_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(script), mode, str(at), "--", *args], capture_output=True,
                          text=True, env=env, timeout=300)


def weights(run_dir: Path) -> dict:
    return load_checkpoint(run_dir / "checkpoints" / "last.pt")


def assert_same_weights(got: dict, expected: dict) -> None:
    assert got["step"] == expected["step"]
    assert got["model"].keys() == expected["model"].keys()
    for key, value in expected["model"].items():
        assert torch.equal(got["model"][key], value), key


@pytest.fixture(scope="module")
def recipe(tiny_dataset, tmp_path_factory) -> Path:
    return write_tiny_recipe(tmp_path_factory.mktemp("faults") / "tiny.yaml", tiny_dataset, max_steps=STEPS,
                             gain_db=3.0)


@pytest.fixture(scope="module")
def uninterrupted(recipe, tmp_path_factory) -> dict:
    result = train(recipe, runs_root=tmp_path_factory.mktemp("whole"), progress=False)
    assert result.step == STEPS
    return weights(result.run_dir)


# Loss calls: one per training step plus one per validation batch (2 batches after steps 2, 4, 6), so call
# 5 is step 3 (after the step-2 checkpoints) and call 9 is step 5. torch.save calls: best then last at each
# of steps 2, 4 and 6 (the validation score improves every time).
@pytest.mark.parametrize("mode, at, saved_step", [
    ("kill-at-loss", 5, 2),              # killed between checkpoints
    ("kill-at-loss", 9, 4),
    ("kill-in-checkpoint-write", 2, 2),  # killed half-way through writing last.pt at step 2: best.pt holds
    ("kill-in-checkpoint-write", 3, 2),  # killed writing best.pt at step 4: last.pt of step 2 holds
], ids=["between-checkpoints-1", "between-checkpoints-2", "writing-last", "writing-best"])
def test_sigkill_then_resume_loses_at_most_one_interval_and_ends_as_an_unbroken_run(
        recipe, uninterrupted, tmp_path, mode, at, saved_step):
    runs = tmp_path / "runs"
    killed = run_faulty(tmp_path, mode, at, "train", str(recipe), "--runs-root", str(runs), "-q")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    checkpoints = runs / "tiny" / "checkpoints"
    if mode == "kill-in-checkpoint-write":
        assert list(checkpoints.glob(".*.tmp")), "the fault did not hit a checkpoint write"
    # whatever is on disk under a checkpoint's name is complete: the half-written file is only a temp file
    steps = [load_checkpoint(checkpoints / name)["step"] for name in ("last.pt", "best.pt")
             if (checkpoints / name).exists()]
    assert max(steps) == saved_step
    resumed = run_faulty(tmp_path, "none", 0, "train", str(recipe), "--runs-root", str(runs), "--resume", "-q")
    assert resumed.returncode == 0, resumed.stderr
    assert_same_weights(weights(runs / "tiny"), uninterrupted)
    assert not list(checkpoints.glob(".*.tmp")), "a stale temp file survived the resume"


def test_ctrl_c_saves_a_checkpoint_says_how_to_resume_and_resume_finishes(recipe, uninterrupted, tmp_path):
    runs = tmp_path / "runs"
    interrupted = run_faulty(tmp_path, "sigint-at-loss", 5, "train", str(recipe), "--runs-root", str(runs), "-q")
    assert interrupted.returncode == 0, interrupted.stderr
    assert "--resume" in interrupted.stderr and "interrupted at step 3" in interrupted.stderr
    assert load_checkpoint(runs / "tiny" / "checkpoints" / "last.pt")["step"] == 3
    resumed = run_faulty(tmp_path, "none", 0, "train", str(recipe), "--runs-root", str(runs), "--resume", "-q")
    assert resumed.returncode == 0, resumed.stderr
    assert_same_weights(weights(runs / "tiny"), uninterrupted)


# ---- model files from strangers ------------------------------------------------------------------------------

class Payload:
    """Unpickling this object would create a file: the harmless stand-in for running any code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def one_line_error(result) -> str:
    assert result.exit_code == 1, (result.output, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_a_checkpoint_carrying_code_is_refused_and_the_code_never_runs(tmp_path, tiny_run):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    state = load_checkpoint(tiny_run / "checkpoints" / "last.pt")
    state["extra"] = Payload(marker)
    torch.save(state, evil)
    with pytest.raises(UserError, match="refused.*run code"):
        load_checkpoint(evil)
    result = CliRunner().invoke(main, ["generate", "-n", "1", str(tmp_path / "out"), "--checkpoint", str(evil)])
    assert "refused" in one_line_error(result)
    assert not marker.exists()
    assert not (tmp_path / "out" / "sample_000.wav").exists()


def test_damaged_foreign_and_future_checkpoints_each_get_one_line(tmp_path, tiny_run):
    good = tiny_run / "checkpoints" / "last.pt"
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    text = tmp_path / "notes.pt"
    text.write_text("these are my notes, not a model\n")
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    future = tmp_path / "future.pt"
    state = load_checkpoint(good)
    save_checkpoint(future, {k: v for k, v in state.items() if k not in ("format", "format_version")})
    raw = torch.load(future, weights_only=True)
    raw["format_version"] = CHECKPOINT_VERSION + 1
    torch.save(raw, future)
    expectations = {truncated: "truncated or damaged", text: "not an audiovae checkpoint",
                    foreign: "not an audiovae checkpoint", future: "newer than this audiovae",
                    tmp_path / "missing.pt": "no such checkpoint"}
    for path, message in expectations.items():
        with pytest.raises(UserError, match=message):
            load_checkpoint(path)
        result = CliRunner().invoke(main, ["generate", "-n", "1", str(tmp_path / "o"), "--checkpoint", str(path)])
        line = one_line_error(result)
        assert str(path) in line and message in line


def test_a_checkpoint_whose_recipe_has_a_key_this_version_lacks_names_the_key(tmp_path, tiny_run):
    """A run trained by another audiovae (a recipe key this one does not know) is refused in one line that says
    which key, not only 'unknown key'."""
    state = load_checkpoint(tiny_run / "checkpoints" / "last.pt")
    state["recipe"]["train"]["warp"] = 0.0
    other = save_checkpoint(tmp_path / "other.pt", {k: v for k, v in state.items()
                                                    if k not in ("format", "format_version")})
    line = one_line_error(CliRunner().invoke(main, ["generate", "-n", "1", str(tmp_path / "o"),
                                                    "--checkpoint", str(other)]))
    assert str(other) in line and "train.warp: unknown key" in line and "another audiovae version" in line


# ---- a corpus of bad inputs ----------------------------------------------------------------------------------

def bad_corpus(root: Path) -> dict[str, str | None]:
    """Write good and bad files under root; returns {relative path: expected skip reason or None if kept}."""
    expected: dict[str, str | None] = {}

    def add(name: str, reason: str | None) -> Path:
        expected[name] = reason
        return root / name

    write_signal(add("good_a.wav", None), 1.0, TINY_RATE, kind="mix", seed=1)
    write_signal(add("good_b.flac", None), 1.2, TINY_RATE, kind="chirp", stop_frequency=3000.0)
    add("empty.wav", "empty file").write_bytes(b"")
    header_only = add("header_only.wav", "zero-length")
    sf.write(str(header_only), np.zeros((0, 1), np.float32), TINY_RATE, subtype="PCM_16")
    full = root.parent / "full.wav"
    write_signal(full, 1.0, TINY_RATE, kind="sine", frequency=330.0)
    add("truncated.wav", None).write_bytes(full.read_bytes()[: 44 + 2 * 12000])  # header promises more
    full.unlink()
    flac_named_wav = root.parent / "really.flac"
    write_signal(flac_named_wav, 1.0, TINY_RATE, kind="sine", frequency=550.0)
    flac_named_wav.rename(add("really_flac.wav", None))  # wrong extension: read by content
    add("notes.wav", "not readable as audio").write_text("meeting notes, definitely not audio\n")
    nan = add("nan.wav", "NaN or infinite")
    sf.write(str(nan), np.full(8000, np.nan, np.float32), TINY_RATE, subtype="FLOAT")
    inf = add("inf.wav", "NaN or infinite")
    samples = np.sin(np.arange(8000) * 0.1).astype(np.float32)
    samples[100] = np.inf
    sf.write(str(inf), samples, TINY_RATE, subtype="FLOAT")
    write_signal(add("zeros.wav", "silent"), 1.0, TINY_RATE, kind="silence")
    write_signal(add("blip.wav", "too short"), 0.01, TINY_RATE)
    write_signal(add("six_channels.wav", None), 1.0, TINY_RATE, channels=6, kind="mix")
    write_signal(add("low_rate.wav", None), 1.0, 8000, kind="sine", frequency=300.0)
    write_signal(add("high_rate.wav", None), 0.5, 96000, kind="chirp", stop_frequency=20000.0)
    hot = add("hot_float.wav", None)
    sf.write(str(hot), (40.0 * np.sin(np.arange(TINY_RATE) * 0.05)).astype(np.float32), TINY_RATE, subtype="FLOAT")
    os.symlink("loop_b.wav", add("loop_a.wav", "cannot open"))
    os.symlink("loop_a.wav", add("loop_b.wav", "cannot open"))
    locked = add("locked.wav", "cannot open")
    write_signal(locked, 1.0, TINY_RATE)
    locked.chmod(0)
    name = os.fsdecode(b"caf\xe9_latin1_name.wav")  # not valid UTF-8
    write_signal(root.parent / "latin1.wav", 1.0, TINY_RATE, kind="sine", frequency=700.0)
    os.rename(root.parent / "latin1.wav", root / name)
    expected[name] = None
    return expected


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.lstat().st_size, p.lstat().st_mtime_ns) for p in root.iterdir()}


@pytest.fixture
def locked_is_unreadable(monkeypatch):
    """As root, chmod 0 does not stop reading: make soundfile see the permission error it would get."""
    if os.geteuid() != 0:
        return
    import audiovae.io.audio

    real_open = audiovae.io.audio.open_binary

    def open_binary(path):
        if str(path).endswith("locked.wav"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path)

    monkeypatch.setattr(audiovae.io.audio, "open_binary", open_binary)


def test_prepare_skips_every_bad_input_with_its_reason_and_keeps_the_rest(tmp_path, capfd, locked_is_unreadable):
    root = tmp_path / "in"
    expected = bad_corpus(root)
    before = snapshot(root)
    data = DataConfig(folder=str(tmp_path / "out"), segment_samples=2048, valid_fraction=0.0)
    result = prepare([root], tmp_path / "out", data, workers=1, progress=False)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    skipped = {item["path"]: item["reason"] for item in manifest["skipped"]}
    kept = {record["path"] for record in manifest["files"]}
    stderr = capfd.readouterr().err
    for name, reason in expected.items():
        shown = os.fsencode(name).decode("utf-8", "backslashreplace")
        if reason is None:
            assert shown in kept, (name, skipped.get(shown))
        else:
            assert reason in skipped[shown], (name, skipped[shown])
            assert f"skipped {root / shown}: " in stderr
    assert result.files == len(kept) == sum(r is None for r in expected.values())
    arrays = np.memmap(tmp_path / "out" / "train.f32", np.float32, "r",
                       shape=tuple(manifest["splits"]["train"]["shape"]))
    assert np.isfinite(arrays).all() and np.abs(arrays).max() <= 1.0  # the 40x-hot float file was normalized
    assert snapshot(root) == before  # nothing written, renamed or touched in the input folder


def test_reconstruct_names_each_bad_input_and_still_writes_the_good_ones(tmp_path, tiny_run, locked_is_unreadable):
    root = tmp_path / "in"
    expected = bad_corpus(root)
    before = snapshot(root)
    inputs = [str(root / name) for name in sorted(expected)]
    result = CliRunner().invoke(main, ["reconstruct", *inputs, str(tmp_path / "out"), "--run", str(tiny_run)])
    assert result.exit_code == 1
    assert "could not be reconstructed" in result.stderr
    for name in expected:
        written = tmp_path / "out" / f"{Path(name).stem}.wav"
        readable = expected[name] is None or expected[name] in ("silent", "too short")
        if readable:  # silent and short files are valid audio: reconstruct them as they are
            with open(written, "rb") as handle:  # soundfile cannot open a non-UTF-8 name itself
                assert sf.info(handle).samplerate == TINY_RATE, name
        else:
            assert not written.exists(), name
            assert f"skipped {root / name}" in result.stderr, name
    assert snapshot(root) == before


def test_evaluate_skips_a_held_out_file_that_went_bad_and_measures_the_rest(tmp_path, tiny_recipe):
    audio = tmp_path / "audio"
    for i in range(4):
        write_signal(audio / f"s{i}.wav", 0.6, TINY_RATE, kind="mix", seed=i)
    data = DataConfig(folder=str(tmp_path / "data"), segment_samples=2048, valid_fraction=0.5)
    prepare([audio], tmp_path / "data", data, workers=1, progress=False)
    recipe = write_tiny_recipe(tmp_path / "tiny.yaml", tmp_path / "data", max_steps=2)
    run = train(recipe, runs_root=tmp_path / "runs", progress=False).run_dir
    manifest = json.loads((tmp_path / "data" / "manifest.json").read_text())
    held_out = [r["path"] for r in manifest["files"] if r["split"] == "valid"]
    (audio / held_out[0]).write_text("overwritten by accident")
    result = CliRunner().invoke(main, ["evaluate", str(run), "-q"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    assert metrics["files"] == len(held_out) - 1
    assert held_out[0] in metrics["skipped"][0] and "not readable as audio" in result.stderr


def rename_key(section: dict, old: str, new: str) -> None:
    section[new] = section.pop(old)


@pytest.mark.parametrize("mutate, message", [
    (lambda r: rename_key(r["model"], "strides", "stridez"), "model.stridez: unknown key (did you mean 'strides'?)"),
    (lambda r: r["model"].update(latent_size="many"), "model.latent_size: must be an integer"),
    (lambda r: r["model"].update(latent_size=-3), "model.latent_size: must be positive"),
    (lambda r: r["model"].update(strides=[4, 3]), "model.strides: total stride 48"),
], ids=["unknown-key", "wrong-type", "negative-size", "stride-not-dividing"])
def test_each_recipe_mistake_is_one_line_naming_the_key(tmp_path, tiny_dataset, mutate, message):
    import yaml

    recipe = write_tiny_recipe(tmp_path / "bad.yaml", tiny_dataset)
    raw = yaml.safe_load(recipe.read_text())
    mutate(raw)
    recipe.write_text(yaml.safe_dump(raw))
    line = one_line_error(CliRunner().invoke(main, ["train", str(recipe), "--runs-root", str(tmp_path / "r")]))
    assert str(recipe) in line and message in line


def test_a_recipe_whose_data_folder_is_missing_says_which_command_to_run(tmp_path):
    recipe = write_tiny_recipe(tmp_path / "nodata.yaml", tmp_path / "never_prepared")
    line = one_line_error(CliRunner().invoke(main, ["train", str(recipe), "--runs-root", str(tmp_path / "r")]))
    assert "never_prepared" in line and "audiovae prepare" in line


# ---- numerical guards and bounded memory ---------------------------------------------------------------------

def test_a_nan_in_the_data_stops_training_with_the_step_and_a_hint(tmp_path, tiny_dataset):
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    for item in tiny_dataset.iterdir():
        (corrupt / item.name).write_bytes(item.read_bytes())
    manifest = json.loads((corrupt / "manifest.json").read_text())
    train_array = np.memmap(corrupt / "train.f32", np.float32, "r+", shape=tuple(manifest["splits"]["train"]["shape"]))
    train_array[:] = np.nan
    train_array.flush()
    recipe = write_tiny_recipe(tmp_path / "tiny.yaml", corrupt)
    with pytest.raises(UserError, match=r"step 0: a training batch contains NaN.*re-run audiovae prepare"):
        train(recipe, runs_root=tmp_path / "runs", progress=False)


def test_gradient_norms_are_logged(tiny_run):
    lines = [json.loads(x) for x in (tiny_run / "metrics.jsonl").read_text().splitlines()]
    norms = [x["grad_norm"] for x in lines if x["split"] == "train"]
    assert len(norms) == 4 and all(np.isfinite(norms)) and all(n > 0 for n in norms)


LONG_SECONDS = 12 * 60  # longer than prepare's in-memory limit (10 minutes): streamed in blocks


@pytest.fixture(scope="module")
def long_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("long") / "in" / "long.wav"
    path.parent.mkdir()
    rate = 8000
    with sf.SoundFile(str(path), "w", rate, 1, "PCM_16") as handle:
        for minute in range(LONG_SECONDS // 60):
            t = np.arange(60 * rate) / rate + minute * 60
            handle.write((0.3 * np.sin(2 * np.pi * (200 + minute * 20) * t)).astype(np.float32))
    return path


def test_prepare_streams_a_long_file_in_bounded_memory(long_file, tmp_path):
    decoded_bytes = LONG_SECONDS * TINY_RATE * 4  # the file as float32 at the target rate: 46 MB
    data = DataConfig(folder=str(tmp_path / "out"), segment_samples=16384, valid_fraction=0.0)
    tracemalloc.start()
    try:
        result = prepare([long_file.parent], tmp_path / "out", data, workers=1, progress=False)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert result.segments["train"] == LONG_SECONDS * TINY_RATE // 16384
    assert peak < decoded_bytes / 3, f"peak {peak / 2**20:.1f} MB"


def test_streamed_and_in_memory_prepare_give_the_same_segments(long_file, tmp_path, monkeypatch):
    import audiovae.data.prepare as prepare_module

    data = DataConfig(folder="unused", segment_samples=16384, valid_fraction=0.0, normalization="rms",
                      target_db=-20.0)
    prepare([long_file.parent], tmp_path / "streamed", data, workers=1, progress=False)
    monkeypatch.setattr(prepare_module, "STREAM_SECONDS", 10**9)
    prepare([long_file.parent], tmp_path / "memory", data, workers=1, progress=False)
    streamed = np.fromfile(tmp_path / "streamed" / "train.f32", np.float32)
    in_memory = np.fromfile(tmp_path / "memory" / "train.f32", np.float32)
    assert streamed.shape == in_memory.shape
    np.testing.assert_allclose(streamed, in_memory, atol=1e-5)


def test_reconstruct_streams_a_long_file_in_bounded_memory(long_file, tmp_path, tiny_run):
    from audiovae.synthesis.model import load

    model = load(tiny_run)
    decoded_bytes = LONG_SECONDS * TINY_RATE * 4
    tracemalloc.start()
    try:
        model.reconstruct_file(long_file, tmp_path / "long_out.wav", block_seconds=10.0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    info = sf.info(str(tmp_path / "long_out.wav"))
    assert info.frames == LONG_SECONDS * TINY_RATE and info.samplerate == TINY_RATE
    assert peak < decoded_bytes / 3, f"peak {peak / 2**20:.1f} MB"


def test_a_prepare_worker_killed_by_the_system_is_an_error_naming_its_files_not_a_hang(tmp_path, monkeypatch):
    """A worker the OOM killer ends leaves its task without a result: a multiprocessing Pool waits for ever;
    prepare says which files the dead worker held, writes nothing, and says how to re-run."""
    import audiovae.data.prepare as prepare_module

    real_run = prepare_module.run_tasks
    assert list(real_run([3, -1, -4, 1, -5], 2, abs)) == [3, 1, 4, 1, 5]  # the pool keeps the tasks' order
    with pytest.raises(prepare_module.WorkerDied) as died:
        list(real_run([1, 1, 1, 1, 1], 2, os._exit))  # each worker ends at once, as a SIGKILL would end it
    assert died.value.indices[0] == 0

    root = tmp_path / "in"
    for name in ("a.wav", "b.wav"):
        write_signal(root / name, 0.5, TINY_RATE)
    monkeypatch.setattr(prepare_module, "run_tasks", lambda tasks, workers: real_run([1] * len(tasks), 2, os._exit))
    data = DataConfig(folder=str(tmp_path / "out"), segment_samples=2048, valid_fraction=0.0)
    with pytest.raises(UserError, match=r"worker process died .* one of .*a\.wav.* --workers 1") as error:
        prepare([root], tmp_path / "out", data, workers=2, progress=False)
    assert "\n" not in str(error.value)
    assert not (tmp_path / "out").exists()


def test_prepare_workers_end_with_a_killed_prepare_instead_of_waiting_for_ever():
    """SIGTERM or SIGKILL to `audiovae prepare` skips its cleanup; its workers watch it and exit on their own."""
    watched = subprocess.Popen([sys.executable, "-c", "import threading; threading.Event().wait()"])
    worker = subprocess.Popen([sys.executable, "-c", "import sys, threading\n"
                               "from audiovae.data.prepare import exit_with_parent\n"
                               "exit_with_parent(int(sys.argv[1])); print('watching', flush=True); threading.Event().wait()",
                               str(watched.pid)], stdout=subprocess.PIPE, text=True)
    try:
        assert worker.stdout.readline() == "watching\n"
        with pytest.raises(subprocess.TimeoutExpired):
            worker.wait(timeout=0.7)  # the watched process lives: the worker stays past a watch (0.5 s)
        watched.kill()
        watched.wait()
        assert worker.wait(timeout=10) == 1
    finally:
        for process in (watched, worker):
            process.kill()
            process.wait()
