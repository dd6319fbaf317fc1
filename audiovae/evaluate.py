"""`audiovae evaluate`: reconstruction, latent health, generation and speed numbers for a trained run.

Reconstruction is measured on whole held-out files (through the chunked reconstruct), next to two
references that need no model: silence, and the input low-passed and mu-law quantized to the bitrate
of the model's latents. The generation number is a Frechet distance on log-mel frames, shown with the
distance between two halves of the held-out set as its floor; it is not comparable to published FAD.
"""

from __future__ import annotations

import csv
import io
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from audiovae.audio import normalize
from audiovae.dataset import read_manifest
from audiovae.errors import UserError
from audiovae.fileio import write_atomic, write_json_atomic
from audiovae.metrics import (
    frechet_distance,
    log_mel_features,
    mel_distance_np,
    mu_law_reference,
    si_sdr,
    stft_distance_np,
)
from audiovae.synth import Model, load

ACTIVE_VARIANCE = 0.01  # a latent dimension whose posterior mean varies less than this is inactive


@dataclass(frozen=True)
class EvaluationResult:
    """What evaluate measured and where it wrote it."""

    metrics: dict[str, Any]
    json_path: Path
    csv_path: Path
    table: str


def held_out_files(manifest: dict[str, Any], split: str) -> list[Path]:
    """Source paths of the manifest's files in `split`, in manifest order (names that are not UTF-8 too)."""
    from audiovae.manifest import source_path

    return [source_path(manifest, record) for record in manifest.get("files", []) if record.get("split") == split]


def _mean(values: list[float]) -> float:
    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


def evaluate(run: str | Path | None = None, data: str | Path | None = None, split: str = "valid",
             max_files: int | None = None, seed: int = 0, device: str = "auto", progress: bool = True,
             runs_root: str | Path = "runs") -> EvaluationResult:
    """Measure a run (default: the newest) on the held-out files of its dataset; write RUN/eval/metrics.*."""
    from tqdm import tqdm

    model = load(run, device=device, runs_root=runs_root)
    run_dir = model.checkpoint.parent.parent
    folder = Path(data) if data is not None else Path(model.recipe.data.folder)
    manifest = read_manifest(folder)
    paths = held_out_files(manifest, split)
    if not paths:
        raise UserError(f"{folder}: no files in the {split!r} split to evaluate on")
    if max_files:
        paths = paths[:max_files]
    rate = model.sample_rate
    latent_bits = model.latent_size * rate / model.frame_samples * 32  # float32 latents
    rows: dict[str, list[float]] = {}
    kl_sums, means, originals = [], [], []
    encode_seconds = decode_seconds = audio_seconds = 0.0
    skipped = []
    for path in tqdm(paths, unit="file", desc="evaluate", disable=not progress, file=sys.stderr):
        try:
            wave = model.load_audio(path)
        except UserError as error:
            skipped.append(str(error))
            tqdm.write(f"warning: skipped {error}", file=sys.stderr)
            continue
        data_cfg = model.recipe.data
        wave = normalize(wave, data_cfg.normalization, data_cfg.level_db)
        start = time.perf_counter()
        latents, kl = model.encode_posterior(wave)
        middle = time.perf_counter()
        output = model.decode(latents)
        encode_seconds += middle - start
        decode_seconds += time.perf_counter() - middle
        audio_seconds += len(wave) / rate
        originals.append(wave)
        means.append(latents.values)
        kl_sums.append(kl)
        candidates = {"model": output, "mu-law reference": mu_law_reference(wave, rate, latent_bits),
                      "silence": np.zeros_like(wave)}
        for name, estimate in candidates.items():
            rows.setdefault(f"{name}/mel_distance", []).append(mel_distance_np(wave, estimate, rate))
            rows.setdefault(f"{name}/stft_distance", []).append(stft_distance_np(wave, estimate))
            rows.setdefault(f"{name}/si_sdr", []).append(si_sdr(wave, estimate) if name != "silence" else float("nan"))
    if not originals:
        raise UserError(f"none of the {len(paths)} held-out files could be read (first: {skipped[0]})")

    reconstruction = {key: _mean(values) for key, values in rows.items()}
    latent = _latent_health(np.concatenate(means, axis=1), np.concatenate(kl_sums, axis=1))
    generation = _generation(model, originals, seed)
    speed = {"device": str(model.device), "encode_real_time_factor": audio_seconds / max(encode_seconds, 1e-9),
             "decode_real_time_factor": audio_seconds / max(decode_seconds, 1e-9)}
    metrics = {"run": str(run_dir), "checkpoint": str(model.checkpoint), "data": str(folder), "split": split,
               "files": len(originals), "skipped": skipped, "audio_seconds": round(audio_seconds, 3),
               "latent_bits_per_second": latent_bits, "reconstruction": reconstruction, "latent": latent,
               "generation": generation, "speed": speed}
    out_dir = run_dir / "eval"
    json_path = write_json_atomic(out_dir / "metrics.json", _rounded(metrics))
    csv_path = out_dir / "metrics.csv"
    flat = _flatten(_rounded({k: metrics[k] for k in ("reconstruction", "latent", "generation", "speed")}))
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["metric", "value"])
    writer.writerows(flat.items())
    write_atomic(csv_path, lambda tmp: tmp.write_text(buffer.getvalue()))
    return EvaluationResult(metrics, json_path, csv_path, format_table(metrics))


def _latent_health(means: np.ndarray, kl: np.ndarray) -> dict[str, Any]:
    """means, kl: (latent_size, frames over all files)."""
    variance = means.var(axis=1)
    kl_per_dimension = kl.mean(axis=1)
    active = int((variance > ACTIVE_VARIANCE).sum())
    size = means.shape[0]
    warning = None
    if active == 0:
        warning = "posterior collapse: no latent dimension carries information"
    elif active < size / 4:
        warning = f"partial posterior collapse: only {active} of {size} latent dimensions are active"
    return {"latent_size": size, "active_dimensions": active, "kl_per_dimension": kl_per_dimension.tolist(),
            "kl_total": float(kl_per_dimension.sum()), "mean_variance_per_dimension": variance.tolist(),
            "collapse_warning": warning}


def _generation(model: Model, originals: list[np.ndarray], seed: int) -> dict[str, float]:
    """Frechet distance on log-mel frames: prior samples vs held-out audio, and held-out half vs half."""
    rate = model.sample_rate
    held_out = [log_mel_features(w, rate) for w in originals]
    seconds = model.recipe.data.segment_samples / rate
    count = max(4, min(64, int(sum(len(w) for w in originals) / rate / seconds)))
    generated = [log_mel_features(w, rate) for w in model.generate(count, seconds, seed=seed)]
    real = np.concatenate(held_out)
    result = {"frechet_prior_vs_heldout": frechet_distance(np.concatenate(generated), real),
              "generated_sounds": count}
    if len(held_out) >= 2:
        order = np.random.default_rng(seed).permutation(len(held_out))
        half = len(order) // 2
        first = np.concatenate([held_out[i] for i in order[:half]])
        second = np.concatenate([held_out[i] for i in order[half:]])
        result["frechet_heldout_half_vs_half"] = frechet_distance(first, second)
    return result


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 5) if np.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def _flatten(value: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, item in value.items():
        name = f"{prefix}{key}"
        if isinstance(item, dict):
            flat.update(_flatten(item, name + "."))
        elif isinstance(item, list):
            flat.update({f"{name}[{i}]": v for i, v in enumerate(item)})
        else:
            flat[name] = item
    return flat


def format_table(metrics: dict[str, Any]) -> str:
    """The human-readable summary printed by the command."""
    rec = metrics["reconstruction"]
    lines = [f"{metrics['files']} held-out files, {metrics['audio_seconds']:.1f} s, from {metrics['checkpoint']}",
             "",
             "| reconstruction | mel distance | STFT distance | SI-SDR dB |", "| --- | ---: | ---: | ---: |"]
    for name in ("model", "mu-law reference", "silence"):
        label = name if name != "mu-law reference" else f"mu-law at {metrics['latent_bits_per_second'] / 1000:.0f} kbit/s"
        lines.append(f"| {label} | {rec[f'{name}/mel_distance']:.3f} | {rec[f'{name}/stft_distance']:.3f} | "
                     f"{_fmt(rec[f'{name}/si_sdr'])} |")
    latent = metrics["latent"]
    gen = metrics["generation"]
    speed = metrics["speed"]
    lines += ["",
              f"latent: {latent['active_dimensions']} of {latent['latent_size']} dimensions active, "
              f"KL {latent['kl_total']:.2f} nats per frame",
              f"generation: Frechet distance (log-mel) prior vs held-out {gen['frechet_prior_vs_heldout']:.2f}"
              + (f", floor (held-out half vs half) {gen['frechet_heldout_half_vs_half']:.2f}"
                 if "frechet_heldout_half_vs_half" in gen else "")
              + "  [not comparable to published FAD]",
              f"speed on {speed['device']}: encode {speed['encode_real_time_factor']:.0f}x, "
              f"decode {speed['decode_real_time_factor']:.0f}x real time"]
    if latent["collapse_warning"]:
        lines.append(f"warning: {latent['collapse_warning']}")
    return "\n".join(lines)


def _fmt(value: float) -> str:
    return "-" if value is None or not np.isfinite(value) else f"{value:.2f}"
