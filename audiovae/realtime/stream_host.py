"""A live host, simulated: an exported model opened by engine, and a file run through it block by block with each
block's compute time measured against its deadline (block / sample rate), so realtime behaviour is testable
without an audio device."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from audiovae.errors import UserError
from audiovae.nn.legacy_export import legacy_export
from audiovae.realtime.export import OnnxRunner, read_card


def cannot_stream(model_section: dict[str, Any]) -> str | None:
    """Why a model (its recipe's `model:` section, as plain data) cannot stream, with the fix; None if it can."""
    family = model_section.get("family")
    if model_section.get("conditional"):
        return ("conditional models do not stream yet (their exports run whole signals, the label as input channels: "
                "docs/conditional.md); stream an unconditional causal run")
    if family == "mel" and not model_section.get("causal"):
        return ("this frame model cannot stream (it is not causal, and Griffin-Lim needs whole spectrograms): train "
                "features: spectrogram with model.causal: true (recipes/live.yaml)")
    if family == "dense":
        return "dense models cannot stream (each latent frame is a whole segment): train family conv with model.causal: true"
    if not model_section.get("causal"):
        return "this model cannot stream (it is not causal): train with model.causal: true"
    return None


# TorchScript's profiling executor records the first calls and then optimizes the graph (~100 ms once);
# a live host pays that while loading, not in its audio callback.
WARM_UP_BLOCKS = 3


def warm_up(run, block: int):
    """Run WARM_UP_BLOCKS silent blocks through an engine, then reset it, as a host does on loading; returns it."""
    for _ in range(WARM_UP_BLOCKS):
        run(np.zeros((1, 1, block), np.float32))
    run.reset()
    return run


def check_block(card: dict[str, Any], block: int) -> None:
    """UserError unless the exported model streams and `block` is a multiple of its hop."""
    if not card["streams"]:
        reason = cannot_stream(card.get("recipe", {}).get("model", {}))
        raise UserError(reason or "this model cannot stream: train with model.causal: true")
    hop = card["frame_samples"]
    if block < hop or block % hop:
        sizes = ", ".join(str(hop * k) for k in range(1, 5))
        raise UserError(f"--block {block} is not a multiple of the hop ({hop} samples): use {sizes}, ...")


def open_engine(folder: str | Path, engine: str = "torchscript"):
    """A callable block (1, 1, n) float32 -> output block with `reset()`, keeping the state between calls."""
    folder = Path(folder)
    if engine == "onnx":
        return OnnxRunner(folder / "forward.onnx", threads=torch.get_num_threads())
    return ScriptRunner(folder / "model.ts")


class ScriptRunner:
    """The TorchScript export's forward on numpy blocks."""

    def __init__(self, path: str | Path):
        with legacy_export():
            self.module = torch.jit.load(str(path))

    def reset(self) -> None:
        self.module.reset()

    def __call__(self, block: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return self.module(torch.from_numpy(block)).numpy()


@dataclass
class StreamReport:
    """Timing of one file streamed block by block: each block's compute time against its deadline."""

    block_samples: int
    sample_rate: int
    latency_samples: int  # the model's delay, on top of one block of buffering
    block_seconds: list[float]
    engine: str

    @property
    def deadline_seconds(self) -> float:
        return self.block_samples / self.sample_rate

    @property
    def misses(self) -> int:
        return sum(t > self.deadline_seconds for t in self.block_seconds)

    @property
    def total_latency_ms(self) -> float:
        return 1000 * (self.block_samples + self.latency_samples) / self.sample_rate

    @property
    def real_time_factor(self) -> float:
        """Audio seconds processed per compute second."""
        return len(self.block_seconds) * self.deadline_seconds / max(sum(self.block_seconds), 1e-12)

    def summary(self) -> str:
        ms = [1000 * t for t in self.block_seconds]
        return (f"latency: {self.block_samples} (block) + {self.latency_samples} (model) samples = "
                f"{self.total_latency_ms:.1f} ms at {self.sample_rate} Hz\n"
                f"{len(ms)} blocks ({self.engine}), deadline {1000 * self.deadline_seconds:.2f} ms: "
                f"mean {np.mean(ms):.3f} ms, max {np.max(ms):.3f} ms, {self.misses} missed; "
                f"{self.real_time_factor:.1f}x real time")


def stream_file(source: str | Path, destination: str | Path, folder: str | Path, block: int,
                engine: str = "torchscript", resample_source: bool = False) -> StreamReport:
    """Stream an audio file through an export in blocks of `block` samples into a 16-bit WAV.

    A source at another rate than the model's is refused unless `resample_source` (a live host, nn~ among
    them, does not resample: it runs the model at the host's rate).

    The output lines up with the input (the model's latency is dropped from its start and the input padded
    with that much silence at the end), so it equals the offline reconstruction of the causal model.
    """
    import sys

    from audiovae.io.audio import AudioReadError, read_audio, resample, write_wav

    card = read_card(folder)
    check_block(card, block)
    rate, latency = card["sample_rate"], card["latency_samples"]
    try:
        wave, source_rate = read_audio(source)
    except AudioReadError as error:
        raise UserError(f"{source}: {error}") from None
    if source_rate != rate and not resample_source:
        raise UserError(f"{source}: {source_rate} Hz, but the model runs at {rate} Hz and a live host does not "
                        f"resample; pass --resample to resample it here, or train a model at {source_rate} Hz")
    if source_rate != rate:
        print(f"{source}: resampled from {source_rate} Hz to the model's {rate} Hz", file=sys.stderr)
        wave = resample(wave, source_rate, rate)
    length = len(wave)
    total = -(-(length + latency) // block) * block
    padded = np.zeros((1, 1, total), np.float32)
    padded[0, 0, :length] = wave
    run, times, pieces = warm_up(open_engine(folder, engine), block), [], []
    for start in range(0, total, block):
        begin = time.perf_counter()
        pieces.append(run(padded[..., start : start + block]))
        times.append(time.perf_counter() - begin)
    out = np.concatenate(pieces, axis=-1)[0, 0, latency : latency + length]
    write_wav(destination, out, rate)
    return StreamReport(block, rate, latency, times, engine)
