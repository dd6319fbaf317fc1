"""`audiovae evaluate`: reconstruction, perceptual quality, latent health, generation and speed of a trained run.

Each held-out file is streamed: resampled into a temporary memory map, encoded and decoded chunk by chunk
into a second one, and measured in blocks of about BLOCK_SECONDS (per-file values are length-weighted
means over blocks), so a file of hours needs no more memory than a block. Reconstruction is shown next to
references that need no model: silence, the input low-passed and mu-law quantized, and Opus, both at the
bitrate of the model's latents, and Opus at 8 and 12 kbit/s (measures.OPUS_FIXED), near a small latent's rate.
With the `metrics` extra, DNSMOS judges the held-out audio itself (the ceiling), the reconstructions and
prior samples, and PESQ-WB/STOI compare reconstructions with their input.
The frame-rate comb counts spectral peaks at multiples of the latent frame rate, the held-out audio's own
share beside it. The generation number is a Frechet distance on log-mel frames, shown with the distance
between two halves of the held-out set as its floor; it is not comparable to published FAD.

The measures of audio (reconstruction against its references, DNSMOS, the comb, and any added) are entries of
audiovae.evaluation.measures, which generates their keys, sections and table rows; this module streams the
files to them and adds the run-level summaries (latent health, generation, speed).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch

from audiovae.data.manifest import read_manifest
from audiovae.errors import UserError
from audiovae.evaluation import perceptual
from audiovae.evaluation.by_label import by_label_lines, frechet_by_label, likeliest_label, split_labels
from audiovae.evaluation.measures import (
    CANDIDATES,
    OPUS_FIXED,
    SIGNALS,
    Measures,
    Setting,
    Tally,
    reconstruction_table,
)
from audiovae.evaluation.metrics import (
    FeatureMoments,
    frechet_distance,
    log_mel_features,
    mu_law_reference,
    opus_available,
    opus_reference,
)
from audiovae.io.atomic import file_sha256, write_csv_atomic, write_json_atomic
from audiovae.io.audio import db
from audiovae.io.outputs import OutputFolder
from audiovae.io.run_folder import DEFAULT_RUNS_ROOT
from audiovae.priors.base import GAUSSIAN, Prior
from audiovae.synthesis.longfile import reconstruction_on_disk
from audiovae.synthesis.model import Model, load

ACTIVE_VARIANCE = 0.01  # a latent dimension whose posterior mean varies less than this is inactive
BLOCK_SECONDS = 30.0  # held-out audio is measured in blocks of about this length
# Prior samples, one DNSMOS window long each, for DNSMOS and the comb. One sample's comb spreads widely (sd
# 0.14-0.17 over 12-16 samples of one run); the mean of the first 4 ranged 0.13-0.36 between seeds of one run.
PRIOR_SOUNDS = 16


@dataclass(frozen=True)
class EvaluationResult:
    """What evaluate measured and where it wrote it."""

    metrics: dict[str, Any]
    json_path: Path
    csv_path: Path
    table: str


def held_out_files(manifest: dict[str, Any], split: str) -> list[Path]:
    """Source paths of the manifest's files in `split`, in manifest order (names that are not UTF-8 too)."""
    from audiovae.data.manifest import source_path, split_records

    return [source_path(manifest, record) for record in split_records(manifest, split)]


def held_out_hashes(manifest: dict[str, Any], split: str) -> list[str | None]:
    """The SHA-256 prepare recorded for each of held_out_files(manifest, split), in the same order (None if none)."""
    from audiovae.data.manifest import split_records

    return [record.get("sha256") for record in split_records(manifest, split)]


def check_unchanged(path: Path, expected: str | None) -> None:
    """UserError when `path` is no longer the file that was prepared (a train file copied over a held-out one
    would be measured as held out)."""
    try:
        actual = file_sha256(path)
    except OSError as error:
        raise UserError(f"{path}: cannot open ({error.strerror or error})") from None
    if expected is not None and actual != expected:
        raise UserError(f"{path}: changed since it was prepared (its SHA-256 differs from the manifest's), so it "
                        "is not the held-out file any more; prepare the data again")


def _use_perceptual(requested: bool | None) -> tuple[bool, str | None]:
    """Whether to compute the perceptual measures, and the note saying why not. Raises UserError, before any
    work, when they were asked for explicitly and a package is missing."""
    if requested is False:
        return False, "perceptual metrics not computed (--no-perceptual)"
    missing = perceptual.missing_packages()
    if not missing:
        return True, None
    if requested:
        perceptual.require()
    return False, f"perceptual metrics skipped: {', '.join(missing)} not installed ({perceptual.INSTALL})"


def block_ranges(samples: int, rate: int, block_seconds: float) -> list[tuple[int, int]]:
    """Near-equal blocks of about block_seconds covering [0, samples): no short scrap at the end."""
    count = max(1, round(samples / (block_seconds * rate)))
    edges = np.linspace(0, samples, count + 1).round().astype(int)
    return list(zip(edges[:-1].tolist(), edges[1:].tolist(), strict=True))


def block_candidates(reference: np.ndarray, output: np.ndarray, rate: int, latent_bits: float, tally: Tally,
                     weight: float) -> dict[str, np.ndarray]:
    """The rows of the reconstruction table for one block (samples,) at `rate`: the model's output and the
    reference codecs', Opus at the latents' bitrate and at each of OPUS_FIXED's. Each Opus row's bitrate reached
    goes into the tally, length-weighted by `weight`: "opus/bits_per_second" for the first, "<row>/bits_per_second"
    for the others."""
    candidates = {"model": output, "mu-law reference": mu_law_reference(reference, rate, latent_bits)}
    if opus_available():
        for name, (key, bits) in {"opus reference": ("opus", latent_bits),
                                  **{row: (row, fixed) for row, fixed in OPUS_FIXED.items()}}.items():
            coded = opus_reference(reference, rate, bits)
            candidates[name] = coded.samples
            tally.add(f"{key}/bits_per_second", coded.bits_per_second, weight)
    candidates["silence"] = np.zeros_like(reference)
    return candidates


def evaluate(run: str | Path | None = None, data: str | Path | None = None, split: str = "valid",
             max_files: int | None = None, seed: int = 0, device: str = "auto", progress: bool = True,
             runs_root: str | Path = DEFAULT_RUNS_ROOT, perceptual_metrics: bool | None = None,
             block_seconds: float = BLOCK_SECONDS) -> EvaluationResult:
    """Measure a run (default: the newest) on the held-out files of its dataset; write RUN/eval/metrics.*.

    perceptual_metrics: True requires the `metrics` extra (UserError before any work if it is missing),
    False skips DNSMOS/PESQ/STOI, None computes them when the extra is installed.
    """

    perceptual_on, perceptual_note = _use_perceptual(perceptual_metrics)
    notes = [perceptual_note] if perceptual_note else []
    if perceptual_note and perceptual_metrics is None:
        print(f"note: {perceptual_note}", file=sys.stderr)
    model = load(run, device=device, runs_root=runs_root)
    # the eval folder is checked and created before any work: a place it cannot write fails now, not in a minute
    eval_names = ["metrics.json", "metrics.csv"]
    with OutputFolder(model.run.eval_dir, "evaluate", eval_names, force=True, legacy=lambda _: eval_names) as outputs:
        metrics = _measure(model, data, split, max_files, seed, perceptual_on, notes, progress, block_seconds)
        write_json_atomic(outputs.paths[0], _rounded(metrics))
        sections = ("reconstruction", *SIGNALS, "latent", "generation", "speed", "opus_fixed_bits_per_second")
        flat = _flatten(_rounded({k: metrics[k] for k in sections if metrics[k] is not None}))
        write_csv_atomic(outputs.paths[1], [["metric", "value"], *flat.items()])
        outputs.commit()
        json_path, csv_path = (outputs.final(name) for name in eval_names)
    return EvaluationResult(metrics, json_path, csv_path, format_table(metrics))


def _measure(model: Model, data: str | Path | None, split: str, max_files: int | None, seed: int,
             perceptual_on: bool, notes: list[str], progress: bool, block_seconds: float) -> dict[str, Any]:
    """What evaluate writes to metrics.json: every measure of `model` on the held-out files of its dataset."""
    from tqdm import tqdm

    folder = Path(data) if data is not None else Path(model.recipe.data.folder)
    manifest = read_manifest(folder)
    paths = held_out_files(manifest, split)
    hashes = held_out_hashes(manifest, split)
    labels = split_labels(manifest, split)  # a conditional run encodes each file under its own label
    if not paths:
        raise UserError(f"{folder}: no files in the {split!r} split to evaluate on")
    if model.labels and None in labels:
        raise UserError(f"{folder}: a conditional run is evaluated on a labelled dataset; prepare it with --labels")
    if max_files:
        paths, hashes, labels = paths[:max_files], hashes[:max_files], labels[:max_files]
    if not opus_available():
        notes.append(f"Opus reference skipped: libsndfile {sf.__libsndfile_version__} "
                     "cannot write Ogg Opus")
    rate = model.sample_rate
    frame_rate = rate / model.frame_samples
    latent_bits = model.latent_size * frame_rate * 32  # float32 latents
    measures = Measures(Setting(rate, frame_rate), perceptual_on)
    tally = Tally()
    latent_sums = None  # per dimension: frames, sum and sum of squares of the means, sum of KL
    priors = {"gaussian": GAUSSIAN, **({"learned": model.learned_prior} if model.learned_prior else {})}
    nll_sums: dict[str, float] = {}
    nll_frames = 0
    heldout_features: list[FeatureMoments] = []
    heldout_labels: list[str | None] = []
    likeliest: list[str] = []  # a conditional learned prior's likeliest label for each held-out file
    encode_seconds = decode_seconds = audio_seconds = 0.0
    skipped = []
    written_gains = []  # per file, the peak-safe scale `audiovae reconstruct` writes it with (Model.reconstruct_file)
    for path, expected, label in tqdm(zip(paths, hashes, labels, strict=True), total=len(paths), unit="file",
                                      desc="evaluate", disable=not progress, file=sys.stderr):
        subject = model.with_label(label) if model.labels else model
        file_priors = {name: subject.learned_prior if name == "learned" else prior for name, prior in priors.items()}
        try:
            with reconstruction_on_disk(subject, path, block_seconds) as streamed:
                check_unchanged(path, expected)  # readable audio, but is it the file that was held out?
                # the model's output at its own level: a written reconstruction whose peak passes full scale is
                # scaled down as a whole, which the measures would count as the model's error (a noise-like
                # synthesis peaks at twice its input's peak on music: mel distance 0.62 -> 0.71); said in a note
                written_gains.append(streamed.written_scale)
                features = FeatureMoments()
                for start, stop in block_ranges(len(streamed.source), rate, block_seconds):
                    reference = np.asarray(streamed.source[start:stop]) * np.float32(streamed.latents.gain)
                    output = np.asarray(streamed.output[start:stop])
                    weight = len(reference) / rate
                    measures.block(tally, block_candidates(reference, output, rate, latent_bits, tally, weight),
                                   reference, output)
                    features.add(log_mel_features(reference, rate))
                measures.file(tally, streamed.source, streamed.output)
                tally.end_file()
                z = torch.from_numpy(streamed.latents.values)[None]
                for name, prior in file_priors.items():  # held-out NLL per latent frame, summed over frames here
                    nll_sums[name] = nll_sums.get(name, 0.0) + prior.nll(z) * z.shape[-1]
                nll_frames += z.shape[-1]
                if model.labels and model.learned_prior is not None:
                    likeliest.append(likeliest_label(model, z))
                sums = _latent_sums(streamed.latents.values, streamed.kl)
                latent_sums = sums if latent_sums is None else latent_sums + sums
                heldout_features.append(features)
                heldout_labels.append(label)
                encode_seconds += streamed.encode_seconds
                decode_seconds += streamed.decode_seconds
                audio_seconds += len(streamed.source) / rate
        except UserError as error:
            skipped.append(str(error))
            tqdm.write(f"warning: skipped {error}", file=sys.stderr)
    if not heldout_features:
        raise UserError(f"none of the {len(paths)} held-out files could be read (first: {skipped[0]})")

    reconstruction = {key: value for key, value in tally.means().items()
                      if key.split("/")[0] in CANDIDATES and not key.endswith("/bits_per_second")}
    latent = _latent_health(latent_sums)
    generation, sampled = _generation(model, priors, heldout_features, audio_seconds, seed)
    generation["nll_per_frame"] = {name: total / nll_frames for name, total in nll_sums.items()}
    generation["samples_prior"] = "learned" if model.learned_prior else "gaussian"  # of the DNSMOS and comb rows
    if None not in heldout_labels and len(set(heldout_labels)) >= 2:
        generation["by_label"] = frechet_by_label(model, heldout_features, heldout_labels,
                                                  generation["generated_sounds"],
                                                  model.recipe.data.segment_samples / rate, seed, likeliest or None,
                                                  sampled["learned" if model.learned_prior else "gaussian"])
    prior = (model.generate(PRIOR_SOUNDS, perceptual.DNSMOS_WINDOW_SECONDS, seed=seed)
             if measures.needs_prior_samples() else [])
    signals, prior_notes = measures.sections(tally, prior)
    notes += prior_notes
    quieter = [gain for gain in written_gains if db(gain) <= -0.1]  # a tenth of a decibel or more
    if quieter:
        notes.append(f"{len(quieter)} of {len(written_gains)} reconstructions peak above full scale: `audiovae "
                     f"reconstruct` writes them quieter by up to {-db(min(quieter)):.1f} dB (peak-safe); the measures "
                     "compare the model's output before that gain")
    notes += [f"{key}: some blocks had no value ({reason})" for key, reason in sorted(tally.reasons.items())]
    speed = {"device": str(model.device), "encode_real_time_factor": audio_seconds / max(encode_seconds, 1e-9),
             "decode_real_time_factor": audio_seconds / max(decode_seconds, 1e-9)}
    opus_bits = tally.means("opus/").get("bits_per_second")
    opus_fixed = {name: tally.means(f"{name}/").get("bits_per_second") for name in OPUS_FIXED}
    return {"run": str(model.run), "checkpoint": str(model.checkpoint), "data": str(folder), "split": split,
               "files": len(heldout_features), "skipped": skipped, "audio_seconds": round(audio_seconds, 3),
               "latent_bits_per_second": latent_bits, "opus_bits_per_second": opus_bits,
               "opus_fixed_bits_per_second": opus_fixed if opus_bits is not None else None,
               "reconstruction": reconstruction, **signals, "latent": latent,
               "generation": generation, "speed": speed, "notes": notes,
               **({"conditional": True} if model.labels else {})}


def _latent_sums(means: np.ndarray, kl: np.ndarray, frames_per_step: int = 1 << 15) -> np.ndarray:
    """means, kl: (latent_size, frames) -> (4, latent_size): frames, sum and sum of squares of the means, sum of
    KL; in float64, a step of frames at a time (no float64 copy of hours of latents)."""
    sums = np.zeros((4, len(means)))
    sums[0] = means.shape[1]
    for start in range(0, means.shape[1], frames_per_step):
        step = means[:, start : start + frames_per_step].astype(np.float64)
        sums[1] += step.sum(axis=1)
        sums[2] += np.square(step).sum(axis=1)
        sums[3] += kl[:, start : start + frames_per_step].sum(axis=1, dtype=np.float64)
    return sums


def _latent_health(sums: np.ndarray) -> dict[str, Any]:
    """sums: (4, latent_size) rows: frames, sum of the means, sum of their squares, sum of KL (nats)."""
    frames, total, squares, kl = sums
    variance = np.maximum(squares / frames - (total / frames) ** 2, 0.0)
    kl_per_dimension = kl / frames
    active = int((variance > ACTIVE_VARIANCE).sum())
    size = len(variance)
    warning = None
    if active == 0:
        warning = "posterior collapse: no latent dimension carries information"
    elif active < size / 4:
        warning = f"partial posterior collapse: only {active} of {size} latent dimensions are active"
    return {"latent_size": size, "active_dimensions": active, "kl_per_dimension": kl_per_dimension.tolist(),
            "kl_total": float(kl_per_dimension.sum()), "mean_variance_per_dimension": variance.tolist(),
            "collapse_warning": warning}


def _generation(model: Model, priors: dict[str, Prior], held_out: list[FeatureMoments], audio_seconds: float,
                seed: int) -> tuple[dict[str, Any], dict[str, FeatureMoments]]:
    """Frechet distance on log-mel frames: each prior's samples vs held-out audio (`frechet_prior_vs_heldout`
    is N(0, I)'s, as in 0.1), and held-out half vs half, the floor. Also each prior's samples' moments (the
    per-label table of an unconditional run reuses the default prior's)."""
    rate = model.sample_rate
    seconds = model.recipe.data.segment_samples / rate
    count = max(4, min(64, int(audio_seconds / seconds)))
    real = sum(held_out, FeatureMoments())
    result: dict[str, Any] = {"generated_sounds": count}
    sampled = {}
    for name, prior in priors.items():
        generated = sampled[name] = FeatureMoments()
        for wave in model.generate(count, seconds, seed=seed, prior=prior):
            generated.add(log_mel_features(wave, rate))
        key = "frechet_prior_vs_heldout" if name == "gaussian" else f"frechet_{name}_vs_heldout"
        result[key] = frechet_distance(generated, real)
    if len(held_out) >= 2:
        order = np.random.default_rng(seed).permutation(len(held_out))
        half = len(order) // 2
        first = sum((held_out[i] for i in order[:half]), FeatureMoments())
        second = sum((held_out[i] for i in order[half:]), FeatureMoments())
        result["frechet_heldout_half_vs_half"] = frechet_distance(first, second)
    return result, sampled


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
    """The human-readable summary printed by the command: the reconstruction table and each signal measure's
    lines, from their registry entries (audiovae.evaluation.measures), then the run-level summaries."""
    kbits = metrics["latent_bits_per_second"] / 1000
    labels = {"model": "model", "mu-law reference": f"mu-law at {kbits:.0f} kbit/s", "silence": "silence"}
    if metrics.get("opus_bits_per_second"):
        labels["opus reference"] = f"Opus at {kbits:.0f} kbit/s ({metrics['opus_bits_per_second'] / 1000:.0f} reached)"
        for name, reached in (metrics.get("opus_fixed_bits_per_second") or {}).items():
            if reached is not None:  # absent from metrics written before the fixed rows
                labels[name] = f"Opus at {OPUS_FIXED[name] / 1000:.0f} kbit/s ({reached / 1000:.1f} reached)"
    lines = [f"{metrics['files']} held-out files, {metrics['audio_seconds']:.1f} s, from {metrics['checkpoint']}", "",
             *reconstruction_table(metrics, labels)]
    for name, measure in SIGNALS.items():
        if metrics.get(name) is not None:
            lines += measure.printed(metrics[name], metrics)
    latent = metrics["latent"]
    gen = metrics["generation"]
    speed = metrics["speed"]
    lines += [f"latent: {latent['active_dimensions']} of {latent['latent_size']} dimensions active, "
              f"KL {latent['kl_total']:.2f} nats per frame",
              "generation: Frechet distance (log-mel) to held-out audio: "
              f"N(0, I) samples {gen['frechet_prior_vs_heldout']:.2f}"
              + (f", learned-prior samples {gen['frechet_learned_vs_heldout']:.2f}"
                 if "frechet_learned_vs_heldout" in gen else "")
              + (f", floor (held-out half vs half) {gen['frechet_heldout_half_vs_half']:.2f}"
                 if "frechet_heldout_half_vs_half" in gen else "")
              + "  [not comparable to published FAD]",
              "held-out NLL per latent frame: " + ", ".join(
                  f"{'N(0, I)' if name == 'gaussian' else 'learned prior'} {value:.2f} nats"
                  for name, value in gen.get("nll_per_frame", {}).items()),
              f"speed on {speed['device']}: encode {speed['encode_real_time_factor']:.0f}x, "
              f"decode {speed['decode_real_time_factor']:.0f}x real time"]
    if "by_label" in gen:
        lines += by_label_lines(gen["by_label"], metrics.get("conditional", False))
    if latent["collapse_warning"]:
        lines.append(f"warning: {latent['collapse_warning']}")
    lines += [f"note: {note}" for note in metrics.get("notes", [])]
    return "\n".join(lines)
