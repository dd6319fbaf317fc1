"""Which device a model runs on, and the autocast that goes with it: CUDA (bf16) when present, else the CPU."""

from __future__ import annotations

import contextlib
import os

import torch

from audiovae.errors import UserError


def select_device(name: str, setting: str = "train.device") -> torch.device:
    """'auto' picks CUDA when present, else CPU; 'cuda' without a GPU is a UserError naming `setting` (the key
    or flag the name came from)."""
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError(f"{setting} is 'cuda' but no CUDA device is available; use 'auto' or 'cpu'")
    if name == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    return torch.device("cuda", local_rank)


def autocast_for(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA; nothing on CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
