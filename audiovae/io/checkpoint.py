"""Checkpoints: plain data and tensors only, written atomically, loaded without running any pickled code."""

from __future__ import annotations

import hashlib
import os
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from audiovae.errors import UserError
from audiovae.io.atomic import atomic_path
from audiovae.version import __version__

CHECKPOINT_FORMAT = "audiovae-checkpoint"
CHECKPOINT_VERSION = 1


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write `state` (dicts, lists, numbers, strings, tensors) to `path`: temp file, fsync, rename."""
    payload = {"format": CHECKPOINT_FORMAT, "format_version": CHECKPOINT_VERSION, "audiovae_version": __version__,
               **state}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with `weights_only=True`: a file carrying code (a pickle payload) is refused.

    Every failure is a UserError naming the file: missing, truncated, not a checkpoint, unsafe, too new.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such checkpoint file")
    with open(path, "rb") as handle:
        magic = handle.read(4)
    if magic != b"PK\x03\x04" and magic[:1] != b"\x80":  # neither torch.save's zip nor its legacy pickle
        raise UserError(f"{path}: not an audiovae checkpoint (not a file torch.save wrote)")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        if "weights_only" in str(error) or "Unsupported global" in str(error):
            raise UserError(f"{path}: refused: the file contains Python objects that would run code when loaded "
                            "(only plain data and tensors are allowed)") from None
        raise UserError(f"{path}: not an audiovae checkpoint ({first[:120]})") from None
    except Exception as error:  # noqa: BLE001 - whatever a damaged or foreign file makes torch raise
        text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        with open(path, "rb") as handle:
            looks_like_torch = handle.read(4) == b"PK\x03\x04"  # torch.save writes a zip archive
        kind = "truncated or damaged" if looks_like_torch else "not an audiovae checkpoint"
        raise UserError(f"{path}: {kind} ({text[:120]})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"{path}: not an audiovae checkpoint")
    version = state.get("format_version")
    if not isinstance(version, int) or version > CHECKPOINT_VERSION:
        raise UserError(f"{path}: checkpoint format {version} is newer than this audiovae reads "
                        f"({CHECKPOINT_VERSION}); upgrade audiovae")
    return state


def weights_sha256(weights: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 of a state dict's names, dtypes, shapes and bytes, in name order: the model's identity, the same
    in best.pt, last.pt or a copy, whatever else the checkpoint file holds."""
    digest = hashlib.sha256()
    for name in sorted(weights):
        tensor = weights[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
