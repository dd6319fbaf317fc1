"""The dataset manifest: its format, how file names are stored losslessly, how it is written and read back."""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
from pathlib import Path
from typing import Any

from audiovae.config.data import DataConfig
from audiovae.errors import UserError
from audiovae.version import __version__

DATASET_FORMAT = "audiovae-dataset"
DATASET_VERSION = 1
SPLITS = ("train", "valid")
MANIFEST_NAME = "manifest.json"


def manifest_path(folder: str | os.PathLike) -> Path:
    """Where a dataset folder keeps its manifest."""
    return Path(folder) / MANIFEST_NAME


def display(path: str | os.PathLike) -> str:
    """A printable form of any path, also one whose name is not valid UTF-8."""
    return os.fsencode(os.fspath(path)).decode("utf-8", "backslashreplace")


def exact_bytes(path: str | os.PathLike) -> str | None:
    """Hex of a path's bytes when `display` cannot show it losslessly (a name that is not valid UTF-8)."""
    raw = os.fsencode(os.fspath(path))
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.hex()
    return None


def _stored(text: str, exact: str | None) -> Path:
    return Path(os.fsdecode(bytes.fromhex(exact))) if exact else Path(text)


def split_records(manifest: dict[str, Any], split: str) -> list[dict[str, Any]]:
    """The manifest's file records in `split` ('train' or 'valid'), in manifest order: the one filter that every
    reader of a split's files, hashes and labels goes through, so they stay in step."""
    return [record for record in manifest.get("files", []) if record.get("split") == split]


def source_path(manifest: dict[str, Any], record: dict[str, Any]) -> Path:
    """The real path of a manifest record's source file (an input file, or a file under an input folder).

    Names that are not valid UTF-8 are stored twice: `path` for people (with \\xNN escapes) and
    `path_bytes` (hex of the name's bytes) for this function; manifests without `path_bytes` still read.
    """
    index = record["input"]
    root = _stored(manifest["inputs"][index], (manifest.get("inputs_bytes") or {}).get(str(index)))
    return root if root.is_file() else root / _stored(record["path"], record.get("path_bytes"))


def build_manifest(roots: list[Path], data: DataConfig, records: list[dict], skipped: list[dict],
                   counts: dict[str, int], seconds: float) -> dict[str, Any]:
    """manifest.json of a dataset: format, settings, item shape, split arrays, totals, one record per file, and
    the sorted label names when the records carry labels (audiovae.data.labels)."""
    settings = dataclasses.asdict(data)
    settings.pop("folder")
    shape = list(data.item_shape)
    return {
        "format": DATASET_FORMAT,
        "format_version": DATASET_VERSION,
        "audiovae_version": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "inputs": [display(r.resolve()) for r in roots],
        **({"inputs_bytes": exact} if (exact := {str(i): e for i, r in enumerate(roots)
                                                 if (e := exact_bytes(r.resolve())) is not None}) else {}),
        "settings": settings,
        "dtype": "float32",
        "item_shape": shape,
        "splits": {split: {"file": f"{split}.f32", "shape": [counts[split], *shape]} for split in SPLITS},
        "totals": {
            "files": len(records),
            "skipped": len(skipped),
            "hours": round(seconds / 3600, 6),
            "segments": dict(counts),
        },
        **({"labels": sorted({r["label"] for r in records})} if records and "label" in records[0] else {}),
        "files": records,
        "skipped": skipped,
    }


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """Load and sanity-check `folder/manifest.json`; UserError names the folder and the fix."""
    folder = Path(folder)
    path = manifest_path(folder)
    if not path.exists():
        hint = "run `audiovae prepare AUDIO_DIR` first" if not folder.exists() else "it is not a prepared dataset"
        raise UserError(f"{folder}: no manifest.json ({hint})")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise UserError(f"{path}: unreadable manifest ({error}); re-run `audiovae prepare`") from None
    if not isinstance(manifest, dict) or manifest.get("format") != DATASET_FORMAT:
        raise UserError(f"{path}: not an audiovae dataset manifest")
    if manifest.get("format_version", 0) > DATASET_VERSION:
        raise UserError(f"{path}: dataset format {manifest['format_version']} is newer than this audiovae "
                        f"understands ({DATASET_VERSION}); upgrade audiovae")
    return manifest
