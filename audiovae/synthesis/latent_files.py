"""Latent files: NAME.npy holds (latent_size, frames) float32 means; NAME.json says where they came from."""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import numpy as np

from audiovae.errors import UserError
from audiovae.io.atomic import write_atomic, write_json_atomic
from audiovae.synthesis.model import Latents, Model

LATENT_FORMAT = "audiovae-latents"


def save_latents(path: Path, latents: Latents, model: Model, source: str | os.PathLike) -> None:
    """Write path (.npy) and its JSON header beside it, atomically."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:  # np.save(path) would append .npy to the temporary name
            np.save(handle, latents.values.astype(np.float32), allow_pickle=False)

    write_atomic(path, write)
    write_json_atomic(path.with_suffix(".json"), {
        "format": LATENT_FORMAT, "format_version": 2,  # 2: hop_samples became frame_samples
        "source": os.fsdecode(source),
        "checkpoint": str(model.checkpoint), "checkpoint_sha256": model.checkpoint_sha256,
        "vae_weights_sha256": model.weights_sha256,  # the encoder's identity: decode checks it
        "sample_rate": model.sample_rate, "frame_samples": model.frame_samples, "latent_size": model.latent_size,
        "frames": int(latents.values.shape[1]), "samples": latents.samples, "gain": latents.gain,
    })


def load_latents(path: str | os.PathLike, model: Model) -> Latents:
    """Read a latent file (and its header, when present) and check that it fits `model`."""
    path = Path(path)
    check_npy_size(path)
    try:
        values = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise UserError(f"{path}: no such latent file") from None
    except (ValueError, OSError, EOFError) as error:
        raise UserError(f"{path}: not a latent .npy file ({error or type(error).__name__})") from None
    header_path = path.with_suffix(".json")
    header = {}
    if header_path.exists():
        try:
            header = json.loads(header_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            raise UserError(f"{header_path}: unreadable header ({error})") from None
        if not isinstance(header, dict):
            raise UserError(f"{header_path}: not a latent header (a JSON object was expected)")
    encoder = header.get("vae_weights_sha256")
    if encoder is not None and model.weights_sha256 is not None and encoder != model.weights_sha256:
        raise UserError(f"{path}: encoded by another model (weights {str(encoder)[:12]}, this one "
                        f"{model.weights_sha256[:12]}); decode with the model that encoded it "
                        f"({header.get('checkpoint')})")
    if values.ndim != 2 or values.shape[0] != model.latent_size:
        raise UserError(f"{path}: latents of shape {values.shape} do not fit this model "
                        f"({model.latent_size} x frames)")
    frame_samples = header.get("frame_samples", header.get("hop_samples", model.frame_samples))  # 0.1: hop_samples
    if frame_samples != model.frame_samples:
        raise UserError(f"{path}: encoded with {frame_samples} samples per frame; this model uses "
                        f"{model.frame_samples} (decode with the model that encoded it)")
    if not np.issubdtype(values.dtype, np.floating) and not np.issubdtype(values.dtype, np.integer):
        raise UserError(f"{path}: latents of dtype {values.dtype} are not real numbers")
    bad = int(np.count_nonzero(~np.isfinite(values)))
    if bad:
        raise UserError(f"{path}: {bad} of the latent values are NaN or infinite; re-encode the source file")
    if values.shape[1] == 0:
        raise UserError(f"{path}: holds 0 latent frames; nothing to decode")
    samples_and_gain = header_samples_and_gain(header_path, header, values.shape[1], model.frame_samples)
    if encoder is None:  # said once the file is usable, so that a refusal stays one line
        why = "has no header" if not header_path.exists() else "has a header from before audiovae 0.3"
        print(f"warning: {path}: {why}, so which model encoded it cannot be checked", file=sys.stderr)
    return Latents(values.astype(np.float32), *samples_and_gain)


def check_npy_size(path: Path) -> None:
    """UserError unless the .npy header's shape and dtype describe exactly the bytes after it: a header that
    claims 10^12 values would otherwise be allocated before the short read fails."""
    try:
        with open(path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, _, dtype = read_header(handle)
            data_bytes = os.fstat(handle.fileno()).st_size - handle.tell()
    except FileNotFoundError:
        raise UserError(f"{path}: no such latent file") from None
    except (ValueError, OSError, EOFError, TypeError) as error:
        raise UserError(f"{path}: not a latent .npy file ({error or type(error).__name__})") from None
    claimed = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if claimed != data_bytes:
        raise UserError(f"{path}: its header claims {shape} values of {dtype} ({claimed} bytes) but the file holds "
                        f"{data_bytes} bytes of data; re-encode the source file")


def header_samples_and_gain(header_path: Path, header: dict, frames: int, frame_samples: int) -> tuple[int, float]:
    """(samples, gain) from a latent file's JSON header, each checked: samples within what `frames` frames decode
    to, gain a positive finite number (0 or NaN would write NaN samples)."""
    most = frames * frame_samples
    samples, gain = header.get("samples", most), header.get("gain", 1.0)
    if isinstance(samples, bool) or not isinstance(samples, int) or not 1 <= samples <= most:
        raise UserError(f"{header_path}: samples must be a whole number in 1..{most} ({frames} frames of "
                        f"{frame_samples}) (got {samples!r}); re-encode the source file")
    if isinstance(gain, bool) or not isinstance(gain, int | float) or not (math.isfinite(gain) and gain > 0):
        raise UserError(f"{header_path}: gain must be a positive finite number (got {gain!r}); re-encode the "
                        "source file")
    return samples, float(gain)
