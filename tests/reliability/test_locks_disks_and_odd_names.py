"""Fault injection, round two: duplicate recipe keys, two trainers on one run folder, a full disk, names that
are not UTF-8, a missing optional dependency, and faults an adversarial user would try.

Each test states a promise from docs/reliability.md and breaks something on purpose to check it.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner, Result
from conftest import TINY_RATE, TINY_SEGMENT, write_signal

from audiovae.cli.main import main
from audiovae.config.data import DataConfig
from audiovae.config.safe_yaml import load_yaml
from audiovae.data.dataset import open_dataset
from audiovae.data.manifest import read_manifest
from audiovae.data.prepare import prepare
from audiovae.errors import UserError
from audiovae.evaluation.evaluate import held_out_files
from audiovae.io import atomic as fileio
from audiovae.io.audio import load_for_model, write_wav
from audiovae.io.checkpoint import save_checkpoint
from audiovae.io.run_folder import RunFolder


def invoke(*args: str | Path) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


def one_line_error(result: Result) -> str:
    """The CLI's user-error contract: exit code 1 and a single 'error: ...' line on stderr."""
    assert result.exit_code == 1, (result.output, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def small_data(folder: Path, **settings) -> DataConfig:
    return DataConfig(folder=str(folder), segment_samples=TINY_SEGMENT, **{"valid_fraction": 0.34, **settings})


def tones(root: Path, count: int = 3) -> Path:
    for i in range(count):
        write_signal(root / f"tone_{i}.wav", 0.4, TINY_RATE, frequency=220.0 * (i + 1))
    return root


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


# ---- 1. duplicate keys in a recipe ------------------------------------------------------------------------

@pytest.mark.parametrize("text, key, lines", [
    ("model:\n  channels: 4\ntrain:\n  seed: 0\nmodel:\n  channels: 8\n", "model", (1, 5)),
    ("model:\n  channels: 4\n  strides: [4, 4]\n  channels: 8\n", "model.channels", (2, 4)),
    ("loss:\n  terms:\n    - {name: mel, name: stft}\n", "loss.terms[0].name", (3, 3)),
], ids=["section", "nested", "in-a-list"])
def test_a_duplicate_key_at_any_depth_names_the_file_the_key_and_both_lines(text, key, lines):
    with pytest.raises(UserError) as error:
        load_yaml(text, "recipes/mine.yaml")
    assert str(error.value).startswith(f"recipes/mine.yaml: {key}: duplicate key (lines {lines[0]} and {lines[1]})")


def test_yaml_merge_keys_may_repeat_and_valid_yaml_loads_as_safe_load_does():
    text = "base: &base {rate: 16000, bands: 4}\nmodel:\n  <<: *base\n  bands: 16\n"
    assert load_yaml(text, "r.yaml") == {"base": {"rate": 16000, "bands": 4}, "model": {"rate": 16000, "bands": 16}}
    assert load_yaml("", "r.yaml") is None


def test_invalid_yaml_names_the_file_and_the_line():
    with pytest.raises(UserError, match=r"^r\.yaml: not valid YAML at line 3: mapping values are not allowed here"):
        load_yaml("model:\n  channels: 4\n   strides: 4\n", "r.yaml")


def test_load_recipe_refuses_a_recipe_with_a_duplicate_section(tmp_path, tiny_recipe):
    """Passes once config.load_recipe parses with yamlsafe.load_yaml (the lead wires it)."""
    from audiovae.config.recipe import load_recipe

    text = tiny_recipe.read_text()
    recipe = tmp_path / "twice.yaml"
    recipe.write_text(text + "model:\n  family: conv\n  channels: 64\n")
    with pytest.raises(UserError, match=r"twice\.yaml: model: duplicate key \(lines \d+ and \d+\)"):
        load_recipe(recipe)


# ---- 2. two trainers on one run folder --------------------------------------------------------------------

HOLDER = textwrap.dedent("""
    import sys
    from audiovae.io.run_folder import RunFolder
    with RunFolder(sys.argv[1]).lock():
        print("held", flush=True)
        sys.stdin.read()
""")


def test_a_second_trainer_is_refused_naming_the_holder_and_a_killed_holder_frees_the_folder(tmp_path, capfd):
    run_dir = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(run_dir)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(UserError) as error:
            RunFolder(run_dir).lock().acquire()
        message = str(error.value)
        assert "\n" not in message and message.startswith(f"{run_dir / 'run.lock'}: ")
        assert f"pid {holder.pid} on {socket.gethostname()}, since 20" in message
    finally:
        holder.kill()  # SIGKILL: no clean-up runs, the lock file stays behind
        holder.wait()
    assert (run_dir / "run.lock").exists()
    with RunFolder(run_dir).lock():  # the kernel dropped the dead holder's flock
        assert json.loads((run_dir / "run.lock").read_text())["pid"] == os.getpid()
    assert f"taking over the lock of a run that is no longer running (pid {holder.pid}" in capfd.readouterr().err
    assert not (run_dir / "run.lock").exists()


def test_a_stale_lock_file_of_a_dead_process_is_taken_over_with_a_warning(tmp_path, capfd):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "run.lock").write_text(json.dumps({"pid": pid, "host": socket.gethostname(),
                                                  "started": "2026-01-01T00:00:00+00:00"}))
    with RunFolder(run_dir).lock():
        with pytest.raises(UserError, match=f"pid {os.getpid()}"):  # and it is really held now
            RunFolder(run_dir).lock().acquire()
    assert f"(pid {pid} on {socket.gethostname()}, since 2026-01-01" in capfd.readouterr().err


# ---- 3. the disk fills up ---------------------------------------------------------------------------------

def _no_space() -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("report", ["errno", "torch-runtime-error"])
def test_a_full_disk_while_saving_a_checkpoint_keeps_the_previous_one_bit_for_bit(tmp_path, monkeypatch, report):
    path = tmp_path / "checkpoints" / "last.pt"
    save_checkpoint(path, {"step": 1, "model": {"weight": torch.arange(10.0)}})
    before = path.read_bytes()

    def save(obj, f, *args, **kwargs):
        Path(f).write_bytes(b"PK\x03\x04" + b"\0" * 100)  # a half-written zip, then the write fails
        if report == "errno":
            raise _no_space()
        # what torch.save really raises on a full disk: no errno, only a position mismatch
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")

    monkeypatch.setattr(torch, "save", save)
    monkeypatch.setattr(fileio, "_free_bytes", lambda directory: 4096)
    with pytest.raises(UserError) as error:
        save_checkpoint(path, {"step": 2, "model": {"weight": torch.zeros(10)}})
    assert str(error.value).startswith(f"{path}: the disk is full (No space left on device)")
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]  # no temp file left


@pytest.mark.parametrize("where", ["appending-a-part", "in-a-worker"])
def test_a_full_disk_during_prepare_keeps_the_previous_dataset_and_leaves_no_partial_folder(
        tmp_path, monkeypatch, where):
    audio = tones(tmp_path / "audio")
    output = tmp_path / "data" / "prepared"
    data = small_data(output)
    prepare([audio], output, data, workers=1, progress=False)
    before = snapshot(output)
    if where == "appending-a-part":
        def copy(*args, **kwargs):
            raise _no_space()
        monkeypatch.setattr(shutil, "copyfileobj", copy)
    else:
        def process(*args, **kwargs):  # the worker's part-file write fails
            raise _no_space()
        monkeypatch.setattr("audiovae.data.prepare._process", process)
    with pytest.raises(UserError) as error:
        prepare([audio], output, data, workers=1, force=True, progress=False)
    assert str(error.value).startswith(f"{output}: the disk is full")
    assert snapshot(output) == before
    assert sorted(p.name for p in output.parent.iterdir()) == ["prepared"]


def test_a_full_disk_while_writing_a_wav_names_it_and_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "out" / "sample_000.wav"
    write_wav(path, np.zeros(100), TINY_RATE)
    before = path.read_bytes()

    def write(*args, **kwargs):
        raise _no_space()

    monkeypatch.setattr(sf, "write", write)
    with pytest.raises(UserError, match=r"sample_000\.wav: the disk is full"):
        write_wav(path, np.ones(100) * 0.5, TINY_RATE)
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == ["sample_000.wav"]


# ---- 4. file names that are not UTF-8 ---------------------------------------------------------------------

def test_a_file_name_that_is_not_utf8_is_stored_losslessly_and_found_again(tmp_path):
    audio = tmp_path / "audio"
    write_signal(audio / "plain.wav", 0.4, TINY_RATE, frequency=330.0)
    write_signal(audio / "odd.wav", 0.4, TINY_RATE, frequency=440.0)
    odd = os.path.join(os.fsencode(audio), b"voix_\xe9t\xe9.wav")
    os.rename(os.fsencode(audio / "odd.wav"), odd)
    output = tmp_path / "prepared"
    prepare([audio], output, small_data(output, valid_fraction=0.5), workers=1, progress=False)
    manifest = read_manifest(output)
    record = next(r for r in manifest["files"] if "voix" in r["path"])
    assert record["path"] == "voix_\\xe9t\\xe9.wav" and bytes.fromhex(record["path_bytes"]) == b"voix_\xe9t\xe9.wav"
    found = held_out_files(manifest, "valid") + held_out_files(manifest, "train")
    assert sorted(os.fsencode(p) for p in found) == sorted([os.fsencode(audio / "plain.wav"), odd])
    old = {**manifest, "files": [{k: v for k, v in r.items() if k != "path_bytes"} for r in manifest["files"]]}
    assert len(held_out_files(old, "valid") + held_out_files(old, "train")) == 2  # older manifests still read


# ---- 5. a missing optional dependency is found before any work ---------------------------------------------

@pytest.mark.parametrize("command", ["generate", "reconstruct"])
def test_plot_without_matplotlib_fails_before_any_sound_is_written(tiny_run, tmp_path, monkeypatch, command):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now raises ImportError
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    out = tmp_path / "out"
    inputs = [] if command == "generate" else [write_signal(tmp_path / "in.wav", 0.3, TINY_RATE)]
    extra = ["-n", "2"] if command == "generate" else []
    line = one_line_error(invoke(command, *inputs, out, *extra, "--plot", "--run", tiny_run))
    assert "--plot needs matplotlib" in line
    assert not out.exists() or not any(out.iterdir())


# ---- 7. more faults an adversarial user would try ---------------------------------------------------------

def test_a_named_pipe_named_like_audio_is_refused_instead_of_waited_on(tmp_path):
    fifo = tmp_path / "stream.wav"
    os.mkfifo(fifo)
    outcome: dict[str, str] = {}

    def read() -> None:
        try:
            load_for_model(fifo, TINY_RATE)
        except UserError as error:
            outcome["error"] = str(error)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(10)
    if reader.is_alive():  # the old behaviour: open() waits for a writer forever; release it
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        reader.join(10)
    assert outcome.get("error", "").startswith(f"{fifo}: cannot open (not a regular file but a named pipe)")


def test_an_output_folder_under_a_file_says_so_instead_of_suggesting_force(tmp_path):
    audio = tones(tmp_path / "audio", 2)
    (tmp_path / "notes.txt").write_text("not a folder\n")
    line = one_line_error(invoke("prepare", audio, "-o", tmp_path / "notes.txt" / "prepared", "-q",
                                 "--workers", "1", "--segment-samples", TINY_SEGMENT))
    assert f"{tmp_path / 'notes.txt'} is a file, not a folder" in line and "--force" not in line


def test_repeated_and_nested_inputs_use_each_file_once_so_no_file_is_in_both_splits(tmp_path, capfd):
    audio = tones(tmp_path / "audio", 2)
    tones(audio / "more", 2)
    output = tmp_path / "prepared"
    result = prepare([audio, audio / "more", audio], output, small_data(output, valid_fraction=0.5), workers=1,
                     progress=False)
    assert result.files == 4
    real = [os.path.realpath(p) for p in held_out_files(result.manifest, "train")
            + held_out_files(result.manifest, "valid")]
    assert len(real) == len(set(real)) == 4
    assert "warning: 6 files were found twice" in capfd.readouterr().err


@pytest.mark.parametrize("damage", [
    lambda m: m.pop("splits"),
    lambda m: m["splits"]["train"].pop("shape"),
    lambda m: m["splits"]["train"].update(shape=["12", "2048"]),
    lambda m: m["splits"].update(valid=None),
    lambda m: m["splits"]["train"].update(file="../../elsewhere.f32"),
], ids=["no-splits", "no-shape", "shape-of-strings", "split-null", "file-outside-the-folder"])
def test_a_damaged_manifest_is_one_clear_error_not_a_traceback(tmp_path, damage):
    output = tmp_path / "prepared"
    prepare([tones(tmp_path / "audio")], output, small_data(output), workers=1, progress=False)
    manifest = json.loads((output / "manifest.json").read_text())
    damage(manifest)
    (output / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(UserError, match=r"manifest\.json: damaged manifest .*re-run `audiovae prepare`"):
        open_dataset(output)


@pytest.mark.parametrize("seconds", ["nan", "inf", "1e9"])
def test_generate_of_an_impossible_duration_is_refused_before_any_work(tiny_run, tmp_path, seconds):
    out = tmp_path / "out"
    line = one_line_error(invoke("generate", out, "--seconds", seconds, "--run", tiny_run))
    assert ("--seconds must be a positive number" in line) if seconds != "1e9" else ("free" in line)
    assert not out.exists() or not any(out.iterdir())


def test_decode_of_latents_with_nan_values_is_refused_naming_the_file(tiny_run, tmp_path):
    """Passes once latents.load_latents refuses non-finite values (the lead's file)."""
    values = np.zeros((4, 10), np.float32)
    values[1, 3] = np.nan
    np.save(tmp_path / "broken.npy", values)
    line = one_line_error(invoke("decode", tmp_path / "broken.npy", tmp_path / "out", "--run", tiny_run))
    assert "broken.npy" in line and "NaN" in line
    assert not (tmp_path / "out" / "broken.wav").exists()


# ---- 6. CPU oversubscription ------------------------------------------------------------------------------

@pytest.mark.parametrize("busy, expected", [(0.0, 2), (0.4, 2), (0.6, 1), (1.2, 1), (2.0, 1)])
def test_default_threads_leave_the_cores_other_processes_keep_busy(monkeypatch, busy, expected):
    from audiovae.compute import threads

    monkeypatch.setattr(threads, "available_cpus", lambda: 2)
    monkeypatch.setattr(threads, "busy_cpus", lambda sample_seconds=0.3: busy)
    assert threads.choose_threads(None) == expected
    assert threads.choose_threads(3) == 3  # asked for: used as given
    with pytest.raises(UserError, match="train.num_threads"):
        threads.choose_threads(0)


def test_a_busy_process_is_seen_as_a_busy_core():
    from audiovae.compute.threads import busy_cpus

    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        assert busy_cpus(0.5) >= 0.5
    finally:
        spinner.kill()
        spinner.wait()


def test_apply_threads_sets_torch_and_the_environment_of_children(monkeypatch):
    from audiovae.compute.threads import THREAD_ENV, apply_threads

    before = torch.get_num_threads()
    for name in THREAD_ENV:
        monkeypatch.delenv(name, raising=False)
    try:
        apply_threads(1)
        assert torch.get_num_threads() == 1 and all(os.environ[name] == "1" for name in THREAD_ENV)
    finally:
        torch.set_num_threads(before)
