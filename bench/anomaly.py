"""Measure `audiovae score` on a machine-like corpus: synthesized machines over real recorded backgrounds.

    apt-get download lincity-ng-data && dpkg -x lincity-ng-data_*.deb /tmp/lincity
    .venv/bin/python bench/anomaly.py --backgrounds /tmp/lincity/usr/share/games/lincity-ng/sounds [--minutes 3]

The machine: a motor (fundamental near 50 Hz with 12 harmonics, its speed drifting slowly by +-1 %), a fan
(noise band-passed around 800 Hz, its level swaying 7 times a second) and a 100-Hz mains hum, over one of the
game's recorded city ambiences (industry, traffic, farms; 141 files, 8 minutes, 22.05 kHz) 15 dB below the
machine. Each normal file draws its own speed (+-2 %), level (+-2 dB), phases and background. Anomalies, each at
two severities: a tone (a steady sine at 1-4 kHz, -30 / -20 dB under the machine), knocks (decaying 2-kHz
bursts, 1 / 4 per second) and speed (the motor 4 % / 10 % faster). The model trains on normal files only
(recipes/anomaly.yaml, train.num_threads=1); held-out normal files are scored against each anomalous set with
both measures and with the model-free baseline (distance of a file's mean log-mel frame to the training files'
mean). The corpus is written under --work (default /tmp/audiovae-anomaly) and never into the repository.
A markdown table goes to stdout.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from audiovae.evaluation import anomaly
from audiovae.io.audio import resample, to_mono

RATE = 16000
SECONDS = 5.0
KINDS = {  # kind -> severity -> the anomaly's strength
    "tone": {"low": -30.0, "high": -20.0},  # dB under the machine's RMS
    "knocks": {"low": 1.0, "high": 4.0},  # per second
    "speed": {"low": 1.04, "high": 1.10},  # the motor's speed, times normal
}


def load_backgrounds(folder: Path) -> list[np.ndarray]:
    """Every WAV under folder, mono at RATE, normalized to unit RMS."""
    found = []
    for path in sorted(folder.rglob("*.wav")):
        data, rate = sf.read(path, dtype="float32", always_2d=True)
        wave = resample(to_mono(data), rate, RATE)
        rms = float(np.sqrt(np.mean(np.square(wave))))
        if len(wave) > RATE // 2 and rms > 1e-4:
            found.append(wave / rms)
    if not found:
        sys.exit(f"{folder}: no usable WAV files")
    return found


def background(rng: np.random.Generator, backgrounds: list[np.ndarray], samples: int) -> np.ndarray:
    """Random recordings one after another from random starts, cut to `samples` (unit RMS)."""
    pieces, total = [], 0
    while total < samples:
        clip = backgrounds[rng.integers(len(backgrounds))]
        piece = clip[rng.integers(len(clip) // 2) :]
        pieces.append(piece)
        total += len(piece)
    return np.concatenate(pieces)[:samples]


def machine(seed: int, backgrounds: list[np.ndarray], kind: str = "normal", strength: float = 0.0) -> np.ndarray:
    """One recording of the machine (SECONDS at RATE), normal or with one anomaly of `strength`."""
    rng = np.random.default_rng(seed)
    samples = int(SECONDS * RATE)
    t = np.arange(samples) / RATE
    speed = (1 + rng.uniform(-0.02, 0.02)) * (strength if kind == "speed" else 1.0)
    drift = 1 + 0.01 * np.sin(2 * np.pi * t / rng.uniform(2.0, 6.0) + rng.uniform(0, 2 * np.pi))
    phase = 2 * np.pi * np.cumsum(50.0 * speed * drift) / RATE
    motor = sum(np.sin(k * phase + rng.uniform(0, 2 * np.pi)) / k**0.7 for k in range(1, 13))
    fan_noise = np.fft.rfft(rng.standard_normal(samples))
    frequencies = np.fft.rfftfreq(samples, 1 / RATE)
    fan = np.fft.irfft(fan_noise * np.exp(-0.5 * ((frequencies - 800 * speed) / 300) ** 2), samples)
    fan *= (1 + 0.3 * np.sin(2 * np.pi * 7 * speed * t)) / max(float(np.std(fan)), 1e-9)  # a slow sway
    hum = np.sin(2 * np.pi * 100 * t + rng.uniform(0, 2 * np.pi))
    wave = motor / 3 + 0.5 * fan + 0.3 * hum
    rms = float(np.sqrt(np.mean(np.square(wave))))
    if kind == "tone":
        wave = wave + rms * 10 ** (strength / 20) * np.sqrt(2) * np.sin(2 * np.pi * rng.uniform(1000, 4000) * t)
    if kind == "knocks":
        decay = np.exp(-np.arange(800) / 120.0) * np.sin(2 * np.pi * 2000 * np.arange(800) / RATE)
        for start in rng.integers(0, samples - 800, max(1, round(strength * SECONDS))):
            wave[start : start + 800] += 3 * rms * rng.uniform(0.7, 1.0) * decay
    wave = wave + rms * 10 ** (-15 / 20) * background(rng, backgrounds, samples)
    level = 10 ** (rng.uniform(-2, 2) / 20) * 0.1 / rms
    return np.clip(wave * level, -1, 1).astype(np.float32)


def build_corpus(work: Path, backgrounds: list[np.ndarray], train_files: int, test_files: int) -> dict[str, Path]:
    """Write train/ (normal), normal/ and one folder per kind and severity; the folders by name."""
    folders = {"train": work / "train", "normal": work / "normal"}
    jobs = [("train", i, "normal", 0.0) for i in range(train_files)]
    jobs += [("normal", 10_000 + i, "normal", 0.0) for i in range(test_files)]
    for kind, severities in KINDS.items():
        for severity, strength in severities.items():
            name = f"{kind}-{severity}"
            folders[name] = work / name
            jobs += [(name, 20_000 + 1000 * len(folders) + i, kind, strength) for i in range(test_files)]
    for name, seed, kind, strength in jobs:
        folders[name].mkdir(parents=True, exist_ok=True)
        sf.write(folders[name] / f"{name}_{seed}.wav", machine(seed, backgrounds, kind, strength), RATE)
    return folders


def run(command: list[str]) -> None:
    print("$", " ".join(command), file=sys.stderr)
    subprocess.run(command, check=True)


def train_model(args, prepared: Path, seed: int):
    """Train recipes/anomaly.yaml on the prepared normal files with train.seed = seed; the loaded model."""
    from audiovae.synthesis.model import load

    run_dir = args.work / f"run-seed{seed}"
    shutil.rmtree(run_dir, ignore_errors=True)  # a fresh run each time (the folder is this script's own)
    run([sys.executable, "-m", "audiovae", "train", str(args.recipe), "--set", f"data.folder={prepared}",
         "--set", "train.num_threads=1", "--set", f"train.max_minutes={args.minutes}", "--set", f"train.seed={seed}",
         "--run-dir", str(run_dir), "-q"])
    return load(run_dir, device="cpu", workers=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backgrounds", type=Path, required=True, help="Folder of recorded ambiences (WAV).")
    parser.add_argument("--work", type=Path, default=Path("/tmp/audiovae-anomaly"))
    parser.add_argument("--train-files", type=int, default=60)
    parser.add_argument("--test-files", type=int, default=30)
    parser.add_argument("--minutes", type=float, default=3.0, help="Training budget (train.max_minutes).")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="One model per training seed.")
    parser.add_argument("--recipe", type=Path, default=Path("recipes/anomaly.yaml"))
    args = parser.parse_args()

    started = time.perf_counter()
    folders = build_corpus(args.work, load_backgrounds(args.backgrounds), args.train_files, args.test_files)
    files = {name: sorted(folder.glob("*.wav")) for name, folder in folders.items()}
    prepared = args.work / "prepared"
    run([sys.executable, "-m", "audiovae", "prepare", str(folders["train"]), "--recipe", str(args.recipe), "-o",
         str(prepared), "--force", "-q"])
    tests = [name for name in files if name not in ("train", "normal")]
    results: dict[str, dict[str, list[tuple[float, float]]]] = {name: {} for name in tests}
    for seed in args.seeds:
        model = train_model(args, prepared, seed)
        scores = {name: anomaly.score_files(model, files[name]) for name in ("normal", *tests)}
        for name in tests:
            for measure, result in anomaly.compare(scores["normal"], scores[name]).items():
                results[name].setdefault(measure, []).append((result.auc, result.partial_auc))
    representation = model.recipe.data.representation  # the baseline needs the features only, not the model
    means = {name: [anomaly.mean_log_spectrum(representation, model.load_audio(p)) for p in paths]
             for name, paths in files.items()}
    baseline = {name: anomaly.baseline_scores(means["train"], means[name]) for name in ("normal", *tests)}
    for name in tests:
        results[name]["baseline"] = [(anomaly.roc_auc(baseline["normal"], baseline[name]),
                                      anomaly.partial_auc(baseline["normal"], baseline[name]))]

    columns = ("reconstruction", "elbo", "baseline")
    print(f"{len(files['train'])} training files, {len(files['normal'])} held-out normal and "
          f"{len(files['normal'])} anomalous files per row, {SECONDS:g} s each; model: {args.recipe}, "
          f"{args.minutes:g} min on 1 thread, mean (min-max) over training seeds {args.seeds}")
    print("\n| anomaly | severity | AUC reconstruction | AUC negative ELBO | AUC baseline | pAUC reconstruction "
          "| pAUC negative ELBO | pAUC baseline |\n| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name in tests:
        kind, severity = name.rsplit("-", 1)
        cells = [_cell([v[i] for v in results[name][c]]) for i in (0, 1) for c in columns]
        print(f"| {kind} | {severity} | " + " | ".join(cells) + " |")
    overall = [_cell([np.mean([results[n][c][s][i] for n in tests]) for s in range(len(results[tests[0]][c]))])
               for i in (0, 1) for c in columns]
    print("| mean | | " + " | ".join(overall) + " |")
    print(f"\n{time.perf_counter() - started:.0f} s in all")


def _cell(values: list[float]) -> str:
    """Mean, with the range when there are several values."""
    mean = float(np.mean(values))
    return f"{mean:.3f}" if len(values) == 1 else f"{mean:.3f} ({min(values):.2f}-{max(values):.2f})"


if __name__ == "__main__":
    main()
