"""Benchmark `audiovae prepare` on a synthetic corpus of 44.1 kHz 16-bit stereo WAV files.

    .venv/bin/python bench/prepare.py [--hours 1.0] [--keep]

The corpus (60 s files of tones, chirps, noise and silent gaps) is generated once into
/tmp/audiovae-bench-corpus/<hours>h and deleted at the end unless --keep is given (a kept corpus is reused
by the next run). Each run prepares 16 kHz segments into a temporary folder; a markdown table goes to stdout.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from audiovae.config.data import DataConfig
from audiovae.data.prepare import available_cpus, prepare

CACHE = Path(tempfile.gettempdir()) / "audiovae-bench-corpus"
SOURCE_RATE = 44100
FILE_SECONDS = 60


def synthesize_file(seed: int, seconds: int = FILE_SECONDS, rate: int = SOURCE_RATE) -> np.ndarray:
    """One recording: (time, 2) float32 of drifting tones, a chirp and noise, with 1-4 s silent gaps."""
    rng = np.random.default_rng(seed)
    frames = seconds * rate
    time_s = np.arange(frames, dtype=np.float32) / np.float32(rate)  # (time,) seconds
    mono = np.zeros(frames, dtype=np.float32)
    for _ in range(3):
        frequency = rng.uniform(80.0, 2000.0)
        tremolo = 0.6 + 0.4 * np.sin(np.float32(2 * np.pi * rng.uniform(0.1, 2.0)) * time_s)
        mono += np.float32(rng.uniform(0.05, 0.2)) * tremolo * np.sin(np.float32(2 * np.pi * frequency) * time_s)
    sweep = np.float32(2 * np.pi) * (100.0 * time_s + np.float32(4000.0 / (2 * seconds)) * time_s**2)
    mono += np.float32(0.1) * np.sin(sweep)
    mono += rng.normal(0.0, 0.03, frames).astype(np.float32)
    for _ in range(int(rng.integers(2, 6))):  # silent gaps
        start = int(rng.integers(0, frames))
        mono[start : start + int(rng.uniform(1.0, 4.0) * rate)] = 0.0
    right = np.roll(mono, int(rng.integers(1, 200))) * np.float32(rng.uniform(0.6, 1.0))  # a second channel
    return np.stack([mono, right], axis=1).clip(-1.0, 1.0)


def corpus(hours: float) -> Path:
    """The cached corpus folder for `hours`, generated if missing; at least `hours` of audio."""
    folder = CACHE / f"{hours:g}h"
    count = math.ceil(hours * 3600 / FILE_SECONDS)
    if (folder / "complete").exists():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    started = time.perf_counter()
    for index in range(count):
        sf.write(str(partial / f"rec_{index:04d}.wav"), synthesize_file(index), SOURCE_RATE, subtype="PCM_16")
    (partial / "complete").write_text(f"{count} files x {FILE_SECONDS} s\n")
    os.replace(partial, folder)
    print(f"generated {count} files in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return folder


def warm_page_cache(folder: Path) -> int:
    """Read every file once so each timed run starts from the same (cached) state; returns bytes."""
    total = 0
    for path in sorted(folder.glob("*.wav")):
        with open(path, "rb") as handle:
            while block := handle.read(1 << 24):
                total += len(block)
    return total


def timed_prepare(folder: Path, data: DataConfig, workers: int) -> tuple[float, float, int]:
    """(wall seconds, audio hours, segments) of one prepare run into a temporary folder."""
    with tempfile.TemporaryDirectory(prefix="audiovae-bench-") as scratch:
        started = time.perf_counter()
        result = prepare([folder], Path(scratch) / "prepared", data, workers=workers, progress=False)
        seconds = time.perf_counter() - started
    return seconds, result.hours, sum(result.segments.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=1.0, help="Hours of audio in the corpus (default 1.0).")
    parser.add_argument("--keep", action="store_true", help=f"Keep the generated corpus under {CACHE}.")
    args = parser.parse_args()
    if args.hours <= 0:
        parser.error("--hours must be positive")

    cpus = available_cpus()
    folder = corpus(args.hours)
    try:
        size = warm_page_cache(folder)
        files = len(list(folder.glob("*.wav")))
        print(f"CPUs: {cpus} available ({os.cpu_count()} in the machine), {platform.processor() or platform.machine()}")
        print(f"corpus: {files} files, {size / 2**20:.0f} MiB, 44.1 kHz 16-bit stereo WAV -> 16 kHz, "
              f"segments of 16384 samples\n")
        print("| workers | features | wall s | audio h / wall min | x real time | segments |")
        print("|--------:|----------|-------:|-------------------:|------------:|---------:|")
        runs = [(1, "wave"), (cpus, "wave"), (cpus, "mel")]
        for workers, features in runs:
            seconds, hours, segments = timed_prepare(folder, DataConfig(features=features), workers)
            print(f"| {workers} | {features} | {seconds:.1f} | {hours / (seconds / 60):.2f} | "
                  f"{hours * 3600 / seconds:.0f} | {segments} |", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
