"""prepare --labels: labels from folders or a CSV, into the manifest; a split stratified by label that leaves an
unlabelled dataset's split as it was; counts and an imbalance warning; one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from audiovae.cli.main import main
from audiovae.config.data import DataConfig
from audiovae.data.labels import describe_counts, segment_labels
from audiovae.data.prepare import assign_splits, find_audio, prepare
from audiovae.errors import UserError
from tests.conftest import TINY_RATE, write_signal

DATA = DataConfig(segment_samples=2048, valid_fraction=0.25)


def write_labelled(root: Path, counts: dict[str, int]) -> Path:
    for label, count in counts.items():
        for i in range(count):
            write_signal(root / label / f"{label}_{i}.wav", 0.3, TINY_RATE, frequency=200.0 + 50 * i)
    return root


def write_takes(root: Path, count: int) -> Path:
    """take_0.wav ... in root/audio, unlabelled (a CSV gives their labels)."""
    for i in range(count):
        write_signal(root / "audio" / f"take_{i}.wav", 0.3, TINY_RATE)
    return root / "audio"


def invoke(*args) -> object:
    return CliRunner().invoke(main, [str(a) for a in args])


def test_folder_labels_go_into_the_manifest_and_every_label_is_held_out(tmp_path):
    # 9 kicks and 3 snares: an unstratified split of 3 files could hold out no snare at all
    audio = write_labelled(tmp_path / "audio", {"kick": 9, "snare": 3})
    result = prepare([audio], tmp_path / "data", DATA, workers=1, progress=False, labels="folders")
    manifest = json.loads((tmp_path / "data" / "manifest.json").read_text())
    assert manifest["labels"] == ["kick", "snare"]
    assert all(r["label"] == r["path"].split("/")[0] for r in manifest["files"])
    held_out = {r["label"] for r in manifest["files"] if r["split"] == "valid"}
    assert held_out == {"kick", "snare"}
    assert result.labels == {"kick": {"files": 9, "train": 7 * 2, "valid": 2 * 2},
                             "snare": {"files": 3, "train": 2 * 2, "valid": 1 * 2}}
    # each segment's label, in the order of the split's array
    labels = segment_labels(manifest, "valid", ["kick", "snare"])
    assert labels.tolist() == [next(0 if r["label"] == "kick" else 1 for r in manifest["files"]
                                    if r["split"] == "valid" and r["first_segment"] <= i < r["first_segment"]
                                    + r["segments"]) for i in range(len(labels))]


def test_an_unlabelled_dataset_keeps_its_split_and_manifest_keys(tmp_path):
    audio = write_labelled(tmp_path / "audio", {"kick": 9, "snare": 3})
    prepare([audio], tmp_path / "data", DATA, workers=1, progress=False)
    manifest = json.loads((tmp_path / "data" / "manifest.json").read_text())
    splits = assign_splits(find_audio([audio]), DATA.valid_fraction, DATA.split_seed)
    assert [r["split"] for r in manifest["files"]] == splits
    assert "labels" not in manifest and not any("label" in r for r in manifest["files"])


def test_csv_labels_by_relative_or_absolute_path(tmp_path):
    audio = write_takes(tmp_path, 4)
    table = tmp_path / "labels.csv"
    table.write_text("path,label\ntake_0.wav,low\ntake_1.wav, high\n"
                     f"{audio / 'take_2.wav'},low\ntake_3.wav,high\n", encoding="utf-8")
    prepare([audio], tmp_path / "data", DATA, workers=1, progress=False, labels=str(table))
    manifest = json.loads((tmp_path / "data" / "manifest.json").read_text())
    assert [r["label"] for r in manifest["files"]] == ["low", "high", "low", "high"]


def test_a_file_missing_from_the_csv_is_one_line(tmp_path):
    audio = write_takes(tmp_path, 3)
    table = tmp_path / "labels.csv"
    table.write_text("take_0.wav,low\ntake_1.wav,high\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"labels.csv: no label for 1 of 3 files \(first: take_2.wav\)"):
        prepare([audio], tmp_path / "data", DATA, workers=1, progress=False, labels=str(table))


def test_a_spreadsheets_byte_order_mark_and_conflicting_rows(tmp_path):
    """A CSV saved with a byte-order mark still has its header read; a path given two labels is refused."""
    audio = write_takes(tmp_path, 2)
    table = tmp_path / "labels.csv"
    table.write_text("path,label\ntake_0.wav,low\ntake_1.wav,high\n", encoding="utf-8-sig")
    prepare([audio], tmp_path / "data", DATA, workers=1, progress=False, labels=str(table))
    manifest = json.loads((tmp_path / "data" / "manifest.json").read_text())
    assert [r["label"] for r in manifest["files"]] == ["low", "high"]
    table.write_text("take_0.wav,low\ntake_1.wav,high\ntake_0.wav,high\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"labels.csv: rows 1 and 3 give take_0.wav two labels \(low, high\)"):
        prepare([audio], tmp_path / "data2", DATA, workers=1, progress=False, labels=str(table))


def test_a_file_outside_a_label_folder_is_one_line(tmp_path):
    audio = write_labelled(tmp_path / "audio", {"kick": 2})
    write_signal(audio / "loose.wav", 0.3, TINY_RATE)
    result = invoke("prepare", audio, "-o", tmp_path / "data", "--labels", "folders", "--segment-samples", 2048)
    assert result.exit_code == 1 and "loose.wav: not inside a label folder" in result.output


def test_one_label_is_refused(tmp_path):
    audio = write_labelled(tmp_path / "audio", {"kick": 3})
    result = invoke("prepare", audio, "-o", tmp_path / "data", "--labels", "folders", "--segment-samples", 2048)
    assert result.exit_code == 1
    assert "every file has the label 'kick'; conditioning needs two labels or more" in result.output


def test_counts_are_printed_with_a_warning_on_strong_imbalance(tmp_path):
    audio = write_labelled(tmp_path / "audio", {"kick": 10, "snare": 2})
    result = invoke("prepare", audio, "-o", tmp_path / "data", "--labels", "folders", "--segment-samples", 2048,
                    "--workers", 1, "-q")
    assert result.exit_code == 0, result.output
    assert "kick: 10 files" in result.output and "snare: 2 files" in result.output
    assert "warning: the labels are out of balance: kick has 20 segments, snare 4" in result.output
    balanced = {"a": {"files": 3, "train": 4, "valid": 2}, "b": {"files": 2, "train": 3, "valid": 1}}
    assert not any(line.startswith("warning") for line in describe_counts(balanced))
    assert len(describe_counts(balanced)) == 2
