"""Which device a model runs on, and the arithmetic its training step uses there: CUDA when present, else the
CPU; bf16 autocast on CUDA, and on a CPU with bf16 units (AMX, AVX-512 BF16), float32 elsewhere."""

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


def cpu_has_bf16_units() -> bool:
    """Whether this CPU multiplies bf16 in hardware: Intel AMX tiles (Sapphire Rapids and later) or AVX-512 BF16
    (AMD Zen 4 and later). There the frame models train 1.2-1.6 times the steps a minute under bf16 autocast
    (docs/benchmarks.md: measured on an Intel Xeon with AMX and an AMD EPYC with AVX-512 BF16); elsewhere bf16
    is emulated and slower."""
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool(probe and probe()) or "avx512_bf16" in cpu_flags()


def cpu_flags() -> set[str]:
    """The CPU's feature flags as Linux lists them in /proc/cpuinfo; empty where that cannot be read."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as info:
            for line in info:
                if line.startswith("flags"):
                    return set(line.partition(":")[2].split())
    except OSError:
        pass
    return set()


def training_precision(name: str, device: torch.device, cpu_bf16: bool = True) -> str:
    """The arithmetic the training step uses: 'float32' or 'bfloat16' (autocast). 'auto': bfloat16 on CUDA, and on
    a CPU with bf16 matrix units for a model whose family says bf16 pays there (`cpu_bf16`: Family.cpu_bf16);
    float32 elsewhere."""
    if name != "auto":
        return name
    return "bfloat16" if device.type == "cuda" or (cpu_bf16 and cpu_has_bf16_units()) else "float32"


def autocast_for(device: torch.device, precision: str = "auto") -> contextlib.AbstractContextManager:
    """The forward pass's autocast for `precision`: bf16 autocast on the device, or nothing for float32. Losses are
    computed outside it, in float32. 'auto' here is bf16 on CUDA and float32 on a CPU: bf16 on a CPU needs the
    model's family and a check first (audiovae.training.vae_stage.choose_precision), which name it outright."""
    if training_precision(precision, device, cpu_bf16=False) == "bfloat16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
