"""Fault injection, round three (issue 27): every command's output pointed at its own input, the input's folder,
a symlink to either, and a folder audiovae did not write (with --force). Every input byte and every foreign file
must survive. The commands come from the CLI's own table, so a command added later fails until it has a case.

Also the output mechanism's own promises (audiovae/io/outputs.py): the marker, --force over audiovae's files
only, names claimed atomically, a killed command's staging folder cleared.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from conftest import TINY_RATE, write_signal

from audiovae.cli.main import main
from audiovae.io.outputs import MARKER, STAGING_PREFIX, read_marker


@dataclass(frozen=True)
class World:
    """One test's files: copies of the tiny run and recipe, an audio folder, a latent file, a foreign folder."""

    root: Path
    run: Path
    recipe: Path
    audio: Path  # in/voice.wav
    latents: Path  # lat/voice.npy (+ voice.json)
    foreign: Path  # notes/: files audiovae did not write, some named like its outputs


@dataclass(frozen=True)
class Case:
    """How to point one command's output somewhere: its inputs (the first is the one the scenarios aim at),
    its argv for an output path, whether that output is a file (else a folder), and whether it takes --force."""

    inputs: Callable[[World], list[Path]]
    argv: Callable[[World, Path], list[str]]
    output_is_file: bool = False
    has_force: bool = True


def _run_flag(world: World) -> list[str]:
    return ["--run", str(world.run)]


CASES: dict[str, Case | str] = {
    "prepare": Case(lambda w: [w.audio], lambda w, out: ["prepare", str(w.audio.parent), "-o", str(out),
                                                        "--workers", "1", "-q"]),
    "train": Case(lambda w: [w.recipe], lambda w, out: ["train", str(w.recipe), "--run-dir", str(out), "-q"],
                  has_force=False),
    "train-prior": "writes only inside RUN (its prior/ stage), never a path the user names",
    "evaluate": "writes only RUN/eval/ (checked in test_evaluate_writes_only_its_own_files_in_the_eval_folder)",
    "generate": Case(lambda w: [w.audio], lambda w, out: ["generate", str(out), "-n", "2", "--seconds", "0.05",
                                                         "--prompt", str(w.audio), *_run_flag(w)]),
    "reconstruct": Case(lambda w: [w.audio], lambda w, out: ["reconstruct", str(w.audio), str(out), *_run_flag(w)]),
    "encode": Case(lambda w: [w.audio], lambda w, out: ["encode", str(w.audio), str(out), *_run_flag(w)]),
    "decode": Case(lambda w: [w.latents], lambda w, out: ["decode", str(w.latents), str(out), *_run_flag(w)]),
    "interpolate": Case(lambda w: [w.audio], lambda w, out: ["interpolate", str(w.audio), str(w.audio), str(out),
                                                            "--steps", "2", *_run_flag(w)]),
    "export": Case(lambda w: [w.run / "checkpoints" / "best.pt"], lambda w, out: ["export", str(w.run), str(out)]),
    "stream": Case(lambda w: [w.audio], lambda w, out: ["stream", str(w.audio), str(out), *_run_flag(w)],
                   output_is_file=True),
    "report": Case(lambda w: [w.audio], lambda w, out: ["report", *_run_flag(w), "-o", str(out), "--files", "1",
                                                       "--samples", "1", "--seconds", "0.05", "--prompt",
                                                       str(w.audio), "-q"]),
    "score": Case(lambda w: [w.audio], lambda w, out: ["score", str(w.audio), *_run_flag(w), "--csv", str(out)],
                  output_is_file=True),
}
SCENARIOS = ("input-file", "input-folder", "symlink-to-input", "symlink-to-input-folder", "foreign-folder-force")
FOREIGN_NAMES = ("keep.txt", "sample_000.wav", "sample_001.wav", "samples.json", "voice.wav", "voice.npy",
                 "voice.json", "interp_000.wav", "interp_001.wav", "model.ts", "card.json", "manifest.json")


def test_every_command_has_a_case():
    """A command added to the CLI must say how its output is pointed at its inputs (or why it has no output)."""
    missing = sorted(set(main.commands) - set(CASES))
    assert not missing, f"add a case to CASES for: {', '.join(missing)}"
    assert not set(CASES) - set(main.commands), "CASES names a command the CLI no longer has"


@pytest.fixture(scope="module")
def latent_template(tiny_run, tmp_path_factory) -> Path:
    """A voice.npy/voice.json pair encoded once by the tiny run."""
    folder = tmp_path_factory.mktemp("latent-template")
    source = write_signal(folder / "src" / "voice.wav", 0.3, TINY_RATE, kind="chirp", frequency=200.0)
    result = CliRunner().invoke(main, ["encode", str(source), str(folder / "lat"), "--run", str(tiny_run)])
    assert result.exit_code == 0, result.output
    return folder / "lat"


@pytest.fixture
def world(tmp_path, tiny_run, tiny_recipe, latent_template) -> World:
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    recipe = tmp_path / "recipes" / "tiny.yaml"
    recipe.parent.mkdir()
    shutil.copy(tiny_recipe, recipe)
    audio = write_signal(tmp_path / "in" / "voice.wav", 0.3, TINY_RATE, kind="chirp", frequency=200.0)
    shutil.copytree(latent_template, tmp_path / "lat")
    foreign = tmp_path / "notes"
    for name in FOREIGN_NAMES:
        (foreign / name).parent.mkdir(parents=True, exist_ok=True)
        (foreign / name).write_bytes(f"a file the user wrote: {name}\n".encode())
    (foreign / "runs" / "x" / "checkpoints").mkdir(parents=True)
    (foreign / "runs" / "x" / "checkpoints" / "best.pt").write_bytes(b"weeks of training")
    return World(tmp_path, run, recipe, audio, tmp_path / "lat" / "voice.npy", foreign)


def snapshot(root: Path) -> dict[str, str]:
    """{relative path: sha256 of the bytes, or 'link -> target'} of everything under root."""
    found = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = Path(folder) / name
            key = str(path.relative_to(root))
            found[key] = (f"link -> {os.readlink(path)}" if path.is_symlink()
                          else hashlib.sha256(path.read_bytes()).hexdigest())
    return found


def aim(world: World, case: Case, scenario: str) -> tuple[Path, list[str]]:
    """The output path a scenario points the command at, and the extra flags."""
    target = case.inputs(world)[0]
    if scenario == "input-file":
        return target, []
    if scenario == "input-folder":
        return target.parent, []
    if scenario in ("symlink-to-input", "symlink-to-input-folder"):
        link = world.root / ("link.wav" if case.output_is_file else "link")
        link.symlink_to(target if scenario == "symlink-to-input" else target.parent)
        return link, []
    force = ["--force"] if case.has_force else []
    return (world.foreign / "voice.wav" if case.output_is_file else world.foreign), force


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("command", sorted(name for name, case in CASES.items() if isinstance(case, Case)))
def test_no_output_destroys_an_input_or_a_foreign_file(world, command, scenario):
    case = CASES[command]
    out, extra = aim(world, case, scenario)
    before = snapshot(world.root)
    result = CliRunner().invoke(main, [*case.argv(world, out), *extra])
    after = snapshot(world.root)
    changed = sorted(key for key, digest in before.items()  # the marker is audiovae's own list: it may grow
                     if after.get(key) != digest and not key.endswith(MARKER))
    assert not changed, (changed, result.output)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    if result.exit_code != 0:  # refused: one line, and never advice that could not help or would destroy
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
        assert "pass --force" not in lines[0], lines[0]


# ---- the mechanism's own promises ------------------------------------------------------------------------------
def invoke(*args) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


def test_prepare_force_over_a_folder_audiovae_did_not_write_names_what_is_there_and_deletes_nothing(world):
    result = invoke("prepare", world.audio.parent, "-o", world.foreign, "--force", "--workers", "1", "-q")
    assert result.exit_code == 1
    assert "holds files audiovae did not write (card.json, interp_000.wav" in result.stderr
    assert (world.foreign / "runs" / "x" / "checkpoints" / "best.pt").read_bytes() == b"weeks of training"


def test_prepare_force_replaces_its_own_dataset_whose_marker_lists_every_file(world):
    out = world.root / "data"
    for _ in range(2):
        result = invoke("prepare", world.audio.parent, "-o", out, "--force", "--workers", "1", "-q",
                        "--segment-samples", "2048", "--valid-fraction", "0")
        assert result.exit_code == 0, result.output
    assert set(read_marker(out)) == {"manifest.json", "train.f32", "valid.f32"}
    (out / "notes.txt").write_text("mine")
    result = invoke("prepare", world.audio.parent, "-o", out, "--force", "--workers", "1", "-q",
                    "--segment-samples", "2048", "--valid-fraction", "0")
    assert result.exit_code == 1 and "(notes.txt)" in result.stderr and (out / "notes.txt").read_text() == "mine"


def test_force_replaces_only_audiovaes_files_and_fewer_files_leave_no_stale_ones(world):
    out = world.root / "gen"
    assert invoke("generate", out, "-n", "3", "--seconds", "0.05", "--run", world.run).exit_code == 0
    assert json.loads((out / MARKER).read_text())["files"]["sample_002.wav"]["command"] == "generate"
    result = invoke("generate", out, "-n", "3", "--seconds", "0.05", "--run", world.run)
    assert result.exit_code == 1 and "pass --force to replace audiovae's earlier outputs" in result.stderr
    (out / "notes.txt").write_text("mine")
    assert invoke("generate", out, "-n", "1", "--seconds", "0.05", "--run", world.run, "--force").exit_code == 0
    described = {entry["file"] for entry in json.loads((out / "samples.json").read_text())["files"]}
    assert sorted(p.name for p in out.glob("*.wav")) == sorted(described) == ["sample_000.wav"]
    assert (out / "notes.txt").read_text() == "mine" and not list(out.glob(f"{STAGING_PREFIX}*"))
    (out / "sample_000.wav").unlink()
    (out / "sample_000.wav").write_text("mine now")  # the user's file under an output name: no --force over it
    result = invoke("generate", out, "-n", "1", "--seconds", "0.05", "--run", world.run, "--force")
    assert result.exit_code == 1 and "audiovae did not write it" in result.stderr
    assert "pass --force" not in result.stderr


def test_a_file_that_appears_while_generate_runs_is_kept_and_named(world, monkeypatch):
    from audiovae.synthesis import generate as generation

    out = world.root / "gen"
    original = generation.generate_files

    def meanwhile(model, paths, *args, **kwargs):
        (out / "sample_001.wav").write_text("another process")
        (out / "samples.json").write_text("another process")
        return original(model, paths, *args, **kwargs)

    monkeypatch.setattr(generation, "generate_files", meanwhile)
    result = invoke("generate", out, "-n", "2", "--seconds", "0.05", "--run", world.run)
    assert result.exit_code == 1 and "appeared while audiovae was writing it (2 outputs did)" in result.stderr
    assert (out / "sample_001.wav").read_text() == (out / "samples.json").read_text() == "another process"
    assert (out / "sample_000.wav").stat().st_size > 44 and not list(out.glob(f"{STAGING_PREFIX}*"))


@pytest.mark.parametrize("link", ["hard", "symbolic"])
def test_an_output_name_that_is_a_link_to_the_input_is_refused_even_with_force(world, link):
    out = world.root / "out"
    out.mkdir()
    (os.link if link == "hard" else os.symlink)(world.audio, out / "voice.wav")
    before = world.audio.read_bytes()
    for command in (["reconstruct", world.audio, out], ["stream", world.audio, out / "voice.wav"]):
        result = invoke(*command, "--run", world.run, "--force")
        assert result.exit_code == 1 and f"is the input {world.audio}" in result.stderr, result.stderr
    assert world.audio.read_bytes() == before


def test_a_killed_commands_staging_folder_is_cleared_by_the_next_run(world):
    dead = subprocess.Popen(["true"])
    dead.wait()
    out = world.root / "gen"
    leftover = out / f"{STAGING_PREFIX}{dead.pid}-abc"
    leftover.mkdir(parents=True)
    (leftover / "sample_000.wav").write_bytes(b"half")
    assert invoke("generate", out, "-n", "1", "--seconds", "0.05", "--run", world.run).exit_code == 0
    assert not leftover.exists()


def test_evaluate_writes_only_its_own_files_in_the_eval_folder(world, tiny_dataset):
    eval_dir = world.run / "eval"
    shutil.rmtree(eval_dir, ignore_errors=True)  # the shared run may have been evaluated already
    eval_dir.mkdir()
    (eval_dir / "metrics.csv").write_text("from 0.2, no marker")  # an earlier evaluate's file: replaced
    (eval_dir / "notes.txt").write_text("mine")
    result = invoke("evaluate", world.run, "--max-files", "1", "--no-perceptual", "-q", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert (eval_dir / "notes.txt").read_text() == "mine" and (eval_dir / "metrics.csv").read_text() != ""
    assert set(read_marker(eval_dir)) == {"metrics.json", "metrics.csv"}


def test_a_255_character_output_name_is_written(tmp_path):
    from audiovae.io.audio import write_wav

    path = tmp_path / ("x" * 251 + ".wav")
    write_wav(path, [0.0, 0.5, -0.5], TINY_RATE)
    assert path.stat().st_size > 44


def test_the_entry_points_other_commands_call_go_through_the_same_mechanism(tmp_path):
    """outputs(out_dir, names, force, companions, inputs) and atomic_directory(path, force), as `score` and `report`
    call them: inputs refused, foreign files refused with --force, names recorded in the marker at commit."""
    import click

    from audiovae.cli.common import outputs
    from audiovae.errors import UserError
    from audiovae.io.atomic import atomic_directory

    out = tmp_path / "scores"
    with click.Context(click.Command("score"), info_name="score"):
        folder = outputs(out, ["a.csv"], False, (".json",))
        folder.paths[0].write_text("score")
        assert not (out / "a.csv").exists() and read_marker(out) == {}  # nothing claimed before commit
        assert folder.commit() == [out / "a.csv"] and read_marker(out) == {"a.csv": "score"}
        outputs(out, ["a.csv"], True).discard()  # its own earlier output: replaceable with --force
        (out / "b.csv").write_text("mine")
        with pytest.raises(UserError, match="audiovae did not write it"):
            outputs(out, ["b.csv"], True)
        with pytest.raises(UserError, match="is the input"):
            outputs(out, ["c.csv"], True, inputs=[out / "c.csv"])
    report = tmp_path / "report"
    with atomic_directory(report, False) as tmp:
        (tmp / "index.html").write_text("one")
    with atomic_directory(report, True) as tmp:
        (tmp / "index.html").write_text("two")
    assert (report / "index.html").read_text() == "two" and set(read_marker(report)) == {"index.html"}
    (report / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match=r"holds files audiovae did not write \(notes.txt\)"), \
            atomic_directory(report, True) as tmp:
        (tmp / "index.html").write_text("three")
    assert (report / "notes.txt").read_text() == "mine" and (report / "index.html").read_text() == "two"


@pytest.mark.parametrize("where", ["under-a-file", "current-folder"])
def test_an_impossible_output_folder_is_one_line_not_a_traceback(world, where, monkeypatch):
    monkeypatch.chdir(world.foreign)
    (world.root / "notes.txt").write_text("mine")
    if where == "under-a-file":
        result = invoke("train", world.recipe, "--run-dir", world.root / "notes.txt" / "run", "-q")
        expected = "cannot create the folder"
    else:  # data.folder: "" is the current folder
        result = invoke("prepare", world.audio.parent, "-o", "", "--force", "--workers", "1", "-q")
        expected = "holds files audiovae did not write"
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 1 and len(lines) == 1 and expected in lines[0], result.output
    assert (world.root / "notes.txt").read_text() == "mine" and (world.foreign / "keep.txt").exists()


def test_force_over_outputs_from_before_markers_replaces_them(world):
    """A 0.2 generate folder (samples.json, no marker) is recognized; so is a 0.2 export (card.json)."""
    out = world.root / "gen"
    assert invoke("generate", out, "-n", "2", "--seconds", "0.05", "--run", world.run).exit_code == 0
    (out / MARKER).unlink()
    result = invoke("generate", out, "-n", "2", "--seconds", "0.05", "--run", world.run, "--seed", "5", "--force")
    assert result.exit_code == 0, result.output
    assert json.loads((out / "samples.json").read_text())["files"][0]["seed"] == 5
