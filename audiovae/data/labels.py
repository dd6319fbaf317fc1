"""Labels of a dataset's source files (`audiovae prepare --labels`), the split stratified by them, and their counts.

    --labels folders     DIR/kick/a.wav -> kick       (the first folder under the input folder)
    --labels FILE.csv    rows of path,label           (path relative to the input folder, or absolute)

A labelled manifest holds `labels` (the sorted names) and a `label` in each file's record; conditional recipes
(model.conditional) train on them, and the run stores the names (model.labels) so synthesis needs nothing else.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from audiovae.data.manifest import split_records
from audiovae.errors import UserError

IMBALANCE = 4.0  # warn when the largest label has more than this many times the segments of the smallest


def read_labels(source: str, files: Sequence[Any]) -> list[str]:
    """One label per found file (audiovae.data.prepare.SourceFile: input_index, path, relative), by `source`:
    'folders' or the path of a CSV of path,label. UserError naming the file and the fix when one has none."""
    if source == "folders":
        return [_folder_label(file) for file in files]
    return _csv_labels(Path(source), files)


def _folder_label(file: Any) -> str:
    parts = Path(file.relative).parts
    if len(parts) < 2:
        raise UserError(f"{file.path}: not inside a label folder; with --labels folders each file's label is the "
                        "first folder under the input (DIR/kick/a.wav -> kick): move it into one")
    return parts[0]


def _csv_labels(table: Path, files: Sequence[Any]) -> list[str]:
    try:
        with open(table, newline="", encoding="utf-8-sig") as handle:  # -sig: a spreadsheet's byte-order mark
            rows = [row for row in csv.reader(handle) if row and any(cell.strip() for cell in row)]
    except FileNotFoundError:
        raise UserError(f"{table}: no such labels file (--labels takes 'folders' or a CSV of path,label)") from None
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise UserError(f"{table}: cannot read the labels ({error})") from None
    if rows and [cell.strip().lower() for cell in rows[0][:2]] == ["path", "label"]:
        rows = rows[1:]  # a header
    given: dict[str, str] = {}
    first_row: dict[str, int] = {}
    for number, row in enumerate(rows, 1):
        if len(row) < 2 or not row[0].strip() or not row[1].strip():
            raise UserError(f"{table}: row {number} ({','.join(row)[:80]}) is not path,label")
        path, label = os.path.normpath(row[0].strip()), row[1].strip()
        if given.setdefault(path, label) != label:
            raise UserError(f"{table}: rows {first_row[path]} and {number} give {row[0].strip()} two labels "
                            f"({given[path]}, {label}); keep one")
        first_row.setdefault(path, number)
    labels, missing = [], []
    for file in files:
        label = given.get(os.path.normpath(file.relative)) or given.get(os.path.normpath(str(file.path)))
        if label is None:
            missing.append(file)
        labels.append(label)
    if missing:
        raise UserError(f"{table}: no label for {len(missing)} of {len(files)} files (first: {missing[0].relative}); "
                        "add a row path,label for each (the path relative to the input folder)")
    return labels


def stratified_splits(files: Sequence[Any], labels: Sequence[str], valid_fraction: float, seed: int,
                      assign) -> list[str]:
    """The split of each file, drawn within each label by `assign` (audiovae.data.prepare.assign_splits), so every
    label with two or more files has held-out files and the labels keep their shares in both splits."""
    splits = [""] * len(files)
    for label in sorted(set(labels)):
        members = [i for i, name in enumerate(labels) if name == label]
        for i, split in zip(members, assign([files[i] for i in members], valid_fraction, seed), strict=True):
            splits[i] = split
    return splits


def check_labels(labels: Sequence[str], where: str) -> None:
    """UserError unless there are two labels or more: one label conditions on nothing."""
    names = sorted(set(labels))
    if len(names) < 2:
        raise UserError(f"{where}: every file has the label {names[0]!r}; conditioning needs two labels or more "
                        "(prepare without --labels for an unconditional model)")


def label_counts(records: Sequence[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """label -> {files, train, valid} (segments per split) over a manifest's file records."""
    counts: dict[str, dict[str, int]] = {}
    for record in records:
        entry = counts.setdefault(record["label"], {"files": 0, "train": 0, "valid": 0})
        entry["files"] += 1
        entry[record["split"]] += int(record["segments"])
    return dict(sorted(counts.items()))


def describe_counts(counts: dict[str, dict[str, int]]) -> list[str]:
    """Lines for people: each label's files and segments, and a warning when the labels are far out of balance."""
    lines = [f"  {name}: {c['files']} files, {c['train']} train / {c['valid']} valid segments"
             for name, c in counts.items()]
    totals = {name: c["train"] + c["valid"] for name, c in counts.items()}
    most, least = max(totals, key=totals.get), min(totals, key=totals.get)
    if totals[most] > IMBALANCE * max(totals[least], 1):
        lines.append(f"warning: the labels are out of balance: {most} has {totals[most]} segments, {least} "
                     f"{totals[least]}; the model will know {least} less well (add {least} audio or trim {most})")
    lines += [f"warning: {name} has no held-out segments (a single file): evaluate cannot score it"
              for name, c in counts.items() if c["valid"] == 0]
    return lines


def manifest_labels(manifest: dict[str, Any]) -> tuple[str, ...]:
    """The label names of a prepared dataset (empty when it has none)."""
    return tuple(manifest.get("labels") or ())


def segment_labels(manifest: dict[str, Any], split: str, names: Sequence[str]) -> np.ndarray:
    """The label index (into `names`) of each segment of `split`, (segments,) int64: prepare stores a file's
    segments consecutively from its record's first_segment."""
    shape = manifest["splits"][split]["shape"]
    indices = np.full(shape[0], -1, np.int64)
    position = {name: i for i, name in enumerate(names)}
    for record in split_records(manifest, split):
        first = int(record["first_segment"])
        indices[first : first + int(record["segments"])] = position[record["label"]]
    return indices

