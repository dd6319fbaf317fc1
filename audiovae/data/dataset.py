"""Prepared datasets: check a dataset fits a recipe, and serve its memory-mapped segments."""

from __future__ import annotations

import hashlib
import json
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from audiovae.config.data import DataConfig
from audiovae.data.manifest import manifest_path, read_manifest
from audiovae.data.representations import Representation
from audiovae.errors import UserError


@dataclass(frozen=True)
class PreparedDataset:
    """A dataset folder written by prepare: its manifest and one read-only memmap per split."""

    folder: Path
    manifest: dict[str, Any]
    arrays: dict[str, np.memmap]  # split -> (segments, *item_shape)

    @property
    def sample_rate(self) -> int:
        return int(self.manifest["settings"]["sample_rate"])

    def fingerprint(self) -> dict[str, Any]:
        """What a run trained on, as stored in its checkpoints: settings, split shapes, and a hash of the
        source files (name, content hash, split, segments). Re-preparing the same audio the same way gives
        the same fingerprint; the creation time and audiovae version do not count."""
        files = [[str(r.get("path")), r.get("sha256"), r.get("split"), r.get("segments"),
                  *([r["label"]] if "label" in r else [])] for r in self.manifest.get("files", [])]
        return {"settings": self.manifest.get("settings", {}),
                "splits": {k: list(v["shape"]) for k, v in self.manifest["splits"].items()},
                "files_sha256": hashlib.sha256(json.dumps(files).encode()).hexdigest()}


def dataset_changes(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """What differs between two fingerprints, in words (empty when they agree)."""
    changes = [f"{key} {saved['settings'].get(key)!r} -> {current['settings'].get(key)!r}"
               for key in sorted(set(saved["settings"]) | set(current["settings"]))
               if saved["settings"].get(key) != current["settings"].get(key)]
    changes += [f"{split} split {saved['splits'].get(split)} -> {current['splits'].get(split)} (segments, samples)"
                for split in sorted(set(saved["splits"]) | set(current["splits"]))
                if saved["splits"].get(split) != current["splits"].get(split)]
    if saved["files_sha256"] != current["files_sha256"] and not changes:
        changes.append("the source files or their contents")
    return changes


def prepare_command(manifest: dict[str, Any], data: DataConfig, recipe_path: str | None, folder: Path) -> str:
    """The command line that rebuilds this dataset with the audio settings `data` asks for.

    `--recipe` when the recipe file itself holds those settings; explicit flags when they came from
    `--set` overrides (feature analysis settings, e.g. mel's, only exist in recipes, so datasets of
    non-waveform representations always use --recipe).
    """
    from audiovae.config.recipe import load_recipe

    inputs = " ".join(shlex.quote(p) for p in manifest.get("inputs", ["AUDIO_DIR"]))
    if recipe_path and (not data.representation.is_waveform
                        or load_recipe(recipe_path).data.audio_settings() == data.audio_settings()):
        return f"audiovae prepare {inputs} --recipe {shlex.quote(str(recipe_path))} --force"
    return (f"audiovae prepare {inputs} -o {shlex.quote(str(folder))} --features {data.features} "
            f"--sample-rate {data.sample_rate} --segment-samples {data.segment_samples} "
            f"--hop-samples {data.segment_hop} --normalize {data.normalization} --target-db {data.level_db:g} "
            f"--silence-db {data.silence_db:g} --valid-fraction {data.valid_fraction:g} --seed {data.split_seed} "
            "--force")


def check_compatible(manifest: dict[str, Any], data: DataConfig, folder: Path, recipe_path: str | None) -> None:
    """Raise UserError when the dataset was prepared with other audio settings than the recipe asks for."""
    found = manifest.get("settings", {})
    wanted = data.audio_settings()
    for key, value in wanted.items():
        have = found.get(key)
        if isinstance(value, dict) and isinstance(have, dict):  # nested settings: compare the ones asked for
            have = {k: have.get(k) for k in value}
        if have != value:
            raise UserError(
                f"{folder}: prepared with {key}={_show(have)} but the recipe needs {key}={_show(value)}; "
                f"re-run: {prepare_command(manifest, data, recipe_path, folder)}"
            )


def _show(value: Any) -> str:
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items())
    return str(value)


def open_dataset(folder: str | Path, data: DataConfig | None = None, recipe_path: str | None = None) -> PreparedDataset:
    """Open a dataset folder read-only; with `data`, first check that it matches the recipe."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    if data is not None:
        check_compatible(manifest, data, folder, recipe_path)
    arrays = {}
    for split, (path, shape) in _split_files(manifest, folder).items():
        expected = int(np.prod(shape)) * 4
        actual = path.stat().st_size if path.exists() else -1
        if actual != expected:
            raise UserError(f"{path}: {actual} bytes on disk but the manifest promises {expected}; the dataset is "
                            "damaged, re-run `audiovae prepare` with --force")
        arrays[split] = (np.memmap(path, dtype=np.float32, mode="r", shape=shape) if shape[0]
                         else np.zeros(shape, np.float32))
    return PreparedDataset(folder, manifest, arrays)


def _split_files(manifest: dict[str, Any], folder: Path) -> dict[str, tuple[Path, tuple[int, ...]]]:
    """split -> (array file, shape) from a manifest, refusing one that was edited or damaged into nonsense."""
    try:
        splits = {split: (str(info["file"]), tuple(info["shape"])) for split, info in manifest["splits"].items()}
        valid = all(Path(name).name == name and all(type(n) is int and n >= 0 for n in shape) and shape
                    for name, shape in splits.values())
    except (KeyError, TypeError, AttributeError):
        valid = False
    if not valid:
        raise UserError(f"{manifest_path(folder)}: damaged manifest (\"splits\" needs a file name and a shape "
                        "of counts for each split); re-run `audiovae prepare` with --force")
    return {split: (folder / name, shape) for split, (name, shape) in splits.items()}


class SegmentDataset(torch.utils.data.Dataset):
    """Segments from one split, with optional random crop, gain and transposition for training.

    Items are float tensors (channels, steps) of the representation (e.g. waveforms (1, samples), mel
    frames (n_mels, frames)). Randomness comes from a generator seeded by (seed, epoch, index), so runs and
    resumes repeat exactly. With `labels` (segments,) (a conditional model's), items are (item, label index).
    """

    def __init__(self, array: np.ndarray, representation: Representation, crop_samples: int | None = None,
                 gain_db: float = 0.0, seed: int = 0, labels: np.ndarray | None = None,
                 transpose_semitones: float = 0.0):
        self.array = array
        self.labels = labels
        self.representation = representation
        self.crop_samples = crop_samples
        self.gain_db = gain_db
        self.transpose_semitones = transpose_semitones
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return int(self.array.shape[0])

    def __getitem__(self, index: int) -> torch.Tensor | tuple[torch.Tensor, int]:
        item = self.features(index)
        return item if self.labels is None else (item, int(self.labels[index]))

    def features(self, index: int) -> torch.Tensor:
        """Segment `index` as the model reads it, (channels, steps), cropped, scaled and transposed for training."""
        item = self.representation.item(self.array[index])
        if not self.crop_samples and not self.gain_db and not self.transpose_semitones:
            return item
        rng = np.random.default_rng([self.seed, self.epoch, index])
        if self.crop_samples:
            length = self.crop_samples // self.representation.samples_per_step
            start = int(rng.integers(0, item.shape[-1] - length + 1))
            item = item[..., start : start + length]
        if self.gain_db:
            item = self.representation.with_gain(item, float(rng.uniform(-self.gain_db, self.gain_db)))
        if self.transpose_semitones:
            semitones = float(rng.uniform(-self.transpose_semitones, self.transpose_semitones))
            item = self.representation.transposed(item, 2.0 ** (semitones / 12.0))
        return item.contiguous()
