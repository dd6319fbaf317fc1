"""Compare learned-prior designs on a trained run's latents and print a markdown table.

    PYTHONPATH=. python bench/prior_designs.py [--run runs/quickstart] [--minutes 2] [--designs gru conv]

Each design trains for the same wall time on one thread, on the posterior means of the run's train files
(VAE frozen), and is measured on the valid files: NLL in nats per frame next to N(0, I)'s, sampling speed
frame by frame (62.5 frames/s is real time for the quickstart), and the Frechet distance on log-mel frames
of decoded samples vs the valid files' audio (--reference train: the train files'), with the same number and
length of samples as `audiovae evaluate` (--sample-seconds: longer ones),
averaged over --seeds, and (with the `metrics` extra) the DNSMOS overall score of 16 9-s samples at
temperature 1 as `audiovae evaluate` scores prior samples, next to N(0, I) samples, crops of the train latents themselves (what a perfect prior
would draw: no prior can beat the VAE's decoder) and the reference's half-vs-half floor. Then 60-s samples:
loudness and spectral flatness per 5-s window against the range seen on the training audio.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import torch

from audiovae.data.manifest import read_manifest
from audiovae.evaluation import perceptual
from audiovae.evaluation.evaluate import held_out_files
from audiovae.evaluation.metrics import (
    frechet_distance,
    log_mel_features,
    window_statistics,
    windows_in_range,
)
from audiovae.evaluation.perceptual import DNSMOS_WINDOW_SECONDS
from audiovae.io.audio import normalize
from audiovae.priors.learned import PriorConfig, checkpoint_state
from audiovae.synthesis.model import Model, load
from audiovae.training.prior_stage import fit_prior

FLOW = PriorConfig(kind="flow", hidden_size=64, layers=4, couplings=8, group_frames=8, learning_rate=1e-3,
                   input_noise=0.0, mixtures=1, valid_every=50)  # recipes/spectrogram.yaml's
DESIGNS = {
    "gru": PriorConfig(kind="gru", hidden_size=256, layers=2),
    "conv": PriorConfig(kind="conv", hidden_size=128, layers=10, kernel_size=3, dilation_cycle=5),
    "gru-128": PriorConfig(kind="gru", hidden_size=128, layers=2),  # a quarter of the weights read per frame
    # drawn over all frames at once: 8 couplings over positions of 8 frames, conditioners of 4 gated causal layers
    "flow": FLOW,
    "flow-lr2": dataclasses.replace(FLOW, learning_rate=2e-3),
    "flow-12": dataclasses.replace(FLOW, couplings=12),
    "flow-96": dataclasses.replace(FLOW, hidden_size=96),
    "flow-mix": dataclasses.replace(FLOW, mixtures=8),  # a mixture of 8 Gaussians on the noise side
    # trained on 8-s sequences (as many frames a step) where the recipe's 2 s leave its 4-s reach half unused
    "flow-long": dataclasses.replace(FLOW, sequence_frames=512, batch_size=8),
    # and a reach of 16 s: 6 conditioner layers, dilations 1-32
    "flow-long-reach": dataclasses.replace(FLOW, sequence_frames=512, batch_size=8, layers=6, dilation_cycle=6),
    # against overfitting a few minutes of audio: more dropout, narrower conditioners, noisier inputs
    "flow-drop3": dataclasses.replace(FLOW, dropout=0.3),
    "flow-32": dataclasses.replace(FLOW, hidden_size=32),
    "flow-noise1": dataclasses.replace(FLOW, input_noise=0.1),
    "flow-noise3": dataclasses.replace(FLOW, input_noise=0.3),
    # fewer frames drawn together: the couplings place less within a position, the conditioners reach further
    "flow-g4": dataclasses.replace(FLOW, group_frames=4),
    "flow-g2": dataclasses.replace(FLOW, group_frames=2),
}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def encode_split(model: Model, files: list[Path], cache: Path) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Posterior means (latent, frames) and normalized waveforms of the files, latents cached in `cache` with the
    VAE's weights hash: a cache another run wrote is encoded again, not decoded by the wrong decoder."""
    data = model.recipe.data
    waves = [normalize(model.load_audio(p), data.normalization, data.level_db) for p in files]
    identity = model.weights_sha256 or ""
    if cache.exists() and identity:
        stored = np.load(cache)
        if "weights" in stored and str(stored["weights"]) == identity and len(stored) == len(files) + 1:
            return [stored[f"z{i}"] for i in range(len(files))], waves
    latents = [model.encode(w).values for w in waves]
    np.savez(cache, weights=np.array(identity), **{f"z{i}": z for i, z in enumerate(latents)})
    return latents, waves


def decode(model: Model, z: torch.Tensor, level: bool = True) -> list[np.ndarray]:
    """Latents (batch, latent, frames) -> waveforms, normalized as `Model.generate` returns them (level=True)
    or as decoded (the training level, without re-normalizing a long sample by its single loudest peak)."""
    waves = [model.decode(row.numpy()) for row in z]
    # Model.at_training_level as generate applies it: the normalization, then never above full scale (a sample
    # normalized by its RMS alone can peak past 1, which the DNSMOS scorer refuses)
    return [model.at_training_level(w) for w in waves] if level else waves


def frechet(model: Model, z: torch.Tensor, real: np.ndarray) -> float:
    generated = np.concatenate([log_mel_features(w, model.sample_rate) for w in decode(model, z)])
    return frechet_distance(generated, real)


def window_features(wave: np.ndarray, rate: int, seconds: float = 5.0) -> np.ndarray:
    """Per window of `seconds`: RMS level in dBFS and mean spectral flatness of 1024-sample frames, (windows, 2)."""
    size = int(seconds * rate)
    rows = []
    for start in range(0, len(wave) - size + 1, size):
        piece = wave[start:start + size].astype(np.float64)
        rms_db = 10 * np.log10(np.mean(piece ** 2) + 1e-12)
        frames = np.lib.stride_tricks.sliding_window_view(piece, 1024)[::256] * np.hanning(1024)
        power = np.abs(np.fft.rfft(frames, axis=-1)) ** 2 + 1e-10
        flatness = np.exp(np.log(power).mean(-1)) / power.mean(-1)
        rows.append((rms_db, flatness.mean()))
    return np.array(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default="runs/quickstart", help="Trained VAE run folder.")
    parser.add_argument("--minutes", type=float, default=2.0, help="Training wall time per prior.")
    parser.add_argument("--steps", type=int, default=None,
                        help="Train each prior this many steps instead of --minutes: repeatable, where a wall-time "
                             "budget ends at another step (and best checkpoint) each run.")
    parser.add_argument("--designs", nargs="+", default=list(DESIGNS), choices=list(DESIGNS))
    parser.add_argument("--noise", type=float, nargs="*", default=[0.0, 0.1, 0.3],
                        help="Extra input-noise levels tried on the first design (the default is 0.03).")
    parser.add_argument("--temperatures", type=float, nargs="+", default=[0.7, 0.85, 1.0])
    parser.add_argument("--seeds", type=int, default=3, help="Sample sets averaged per Frechet distance.")
    parser.add_argument("--long-seconds", type=float, default=60.0)
    parser.add_argument("--cache", default="/tmp/audiovae-prior-latents", help="Folder for cached latents.")
    parser.add_argument("--prior-seed", type=int, default=0, help="Every design's prior.seed (its init and batches).")
    parser.add_argument("--sample-seconds", type=float, default=None,
                        help="Length of the Frechet distance's samples (default: one training segment, as evaluate; "
                             "short samples are mostly their decoded edges, which on music hides N(0, I)).")
    parser.add_argument("--reference", choices=["valid", "train"], default="valid",
                        help="The audio the Frechet distance compares samples with: the run's valid files (as "
                             "evaluate does), or its train files, what the prior learned (where a few unlike "
                             "files make the valid set, e.g. music tracks, their halves differ more than samples do).")
    args = parser.parse_args()
    torch.set_num_threads(1)

    model = load(args.run, device="cpu")
    manifest = read_manifest(model.recipe.data.folder)
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    train_z, train_waves = encode_split(model, held_out_files(manifest, "train"), cache / "train.npz")
    valid_z, valid_waves = encode_split(model, held_out_files(manifest, "valid"), cache / "valid.npz")
    rate, latent_size = model.sample_rate, model.latent_size
    log(f"{sum(z.shape[1] for z in train_z)} train / {sum(z.shape[1] for z in valid_z)} valid latent frames")

    # evaluate's _generation's sounds: count x one training segment (or --sample-seconds each)
    reference_z, reference_waves = (valid_z, valid_waves) if args.reference == "valid" else (train_z, train_waves)
    held_out = [log_mel_features(w, rate) for w in reference_waves]
    real = np.concatenate(held_out)
    samples = round(args.sample_seconds * rate) if args.sample_seconds else model.recipe.data.segment_samples
    seconds = samples / rate
    count = max(4, min(64, int(sum(len(w) for w in reference_waves) / rate / seconds)))
    frames = model.frames_for(samples)
    order = np.random.default_rng(0).permutation(len(held_out))
    half = len(order) // 2
    floor = frechet_distance(np.concatenate([held_out[i] for i in order[:half]]),
                             np.concatenate([held_out[i] for i in order[half:]]))
    valid_all = torch.from_numpy(np.concatenate(valid_z, axis=1))[None]
    gaussian_nll = float(0.5 * (valid_all.square().sum(1) + latent_size * np.log(2 * np.pi)).mean())

    def gaussian(batch: int, length: int, temperature: float, seed: int) -> torch.Tensor:
        return torch.randn(batch, latent_size, length, generator=torch.Generator().manual_seed(seed)) * temperature

    def train_crops(seed: int) -> torch.Tensor:
        """What an ideal prior would draw: `count` random crops of the train latents."""
        stream = np.concatenate(train_z, axis=1)
        starts = np.random.default_rng(seed).integers(0, stream.shape[1] - frames, count)
        return torch.from_numpy(np.stack([stream[:, s:s + frames] for s in starts]))

    rows, long_rows = [], []
    for temperature in args.temperatures:
        value = np.mean([frechet(model, gaussian(count, frames, temperature, s), real) for s in range(args.seeds)])
        rows.append(("N(0, I)", "-", "-", f"{gaussian_nll:.1f}", "-", temperature, value))
    ideal = np.mean([frechet(model, train_crops(s), real) for s in range(args.seeds)])
    rows.append(("train latents (an ideal prior)", "-", "-", "-", "-", "-", ideal))

    runs = [(name, DESIGNS[name]) for name in args.designs]
    runs += [(f"{args.designs[0]}, noise {n}", dataclasses.replace(DESIGNS[args.designs[0]], input_noise=n))
             for n in args.noise]
    priors = {}
    mos: dict[str, float] = {}  # DNSMOS OVRL of 16 9-s samples at temperature 1, as evaluate scores prior samples
    scorer = None if perceptual.missing_packages() else perceptual.DnsmosScorer()
    mos_frames = model.frames_for(int(DNSMOS_WINDOW_SECONDS * rate))

    def mean_mos(z: torch.Tensor) -> float:
        return float(np.nanmean([scorer(w, rate).ovrl for w in decode(model, z)]))

    if scorer is not None:
        mos["N(0, I)"] = mean_mos(gaussian(16, mos_frames, 1.0, 0))
    for name, config in runs:
        budget = {"max_steps": args.steps, "max_minutes": None} if args.steps else {"max_minutes": args.minutes}
        config = dataclasses.replace(config, **budget, seed=args.prior_seed)
        log(f"training {name}: {config}")
        result = fit_prior(config, train_z, valid_z, progress=True)
        prior = priors[name] = result.prior
        torch.save(checkpoint_state(prior), cache / f"prior-{name.replace(', ', '-').replace(' ', '')}.pt")
        parameters = sum(p.numel() for p in prior.parameters())
        list(prior.sample_stream(1, 64, 1.0, torch.Generator().manual_seed(0)))  # compiles the loop once
        start = time.perf_counter()
        for _ in prior.sample_stream(1, 1000, 1.0, torch.Generator().manual_seed(0)):
            pass
        speed = 1000 / (time.perf_counter() - start)
        if scorer is not None:
            mos[name] = mean_mos(torch.cat(list(prior.sample_stream(16, mos_frames, 1.0,
                                                                    torch.Generator().manual_seed(0))), -1))
            log(f"{name}: prior samples' DNSMOS {mos[name]:.2f}")
        for temperature in args.temperatures:
            value = np.mean([frechet(model, torch.cat(list(prior.sample_stream(
                count, frames, temperature, torch.Generator().manual_seed(s))), -1), real) for s in range(args.seeds)])
            rows.append((name, f"{parameters / 1e6:.2f} M", result.steps, f"{result.best_valid_nll:.1f}",
                         f"{speed:.0f}", temperature, value))
            log(f"{name} T={temperature}: Frechet {value:.1f}")

    recon = frechet(model, torch.from_numpy(np.concatenate(reference_z, axis=1))[None], real)

    # 60-s samples: decoded loudness and flatness per 5-s window vs the windows of the decoded train latents
    # (the VAE's own level and timbre: what a perfect prior would give), and of the training audio itself
    audio_windows = window_features(np.concatenate(train_waves), rate)
    window = int(5 * rate / model.frame_samples)  # latent frames per 5 s
    train_stream = np.concatenate(train_z, axis=1)
    train_windows = window_features(decode(model, torch.from_numpy(train_stream)[None], level=False)[0], rate)
    _, latent_std = window_statistics(train_stream, window)
    long_frames = model.frames_for(int(args.long_seconds * rate))
    for temperature in args.temperatures:
        sources = {"N(0, I)": gaussian(4, long_frames, temperature, 0)}
        sources.update({name: torch.cat(list(prior.sample_stream(4, long_frames, temperature,
                                                                 torch.Generator().manual_seed(0))), -1)
                        for name, prior in priors.items()})
        for name, z in sources.items():
            windows = np.concatenate([window_features(w, rate) for w in decode(model, z, level=False)])
            z_std = np.concatenate([window_statistics(row.numpy(), window)[1] for row in z])  # (windows, latent)
            inside = ((windows >= train_windows.min(0)) & (windows <= train_windows.max(0))).all(1).mean()
            alive = np.mean([windows_in_range(row.numpy(), train_stream, window) for row in z])
            long_rows.append((name, temperature, len(windows), windows[:, 0].min(), windows[:, 0].max(),
                              windows[:, 1].min(), windows[:, 1].max(), inside, alive,
                              float(z_std.mean(1).min()), float(z_std.mean(1).max())))
        log(f"60-s samples at temperature {temperature} checked")

    budget_text = f"{args.steps} steps" if args.steps else f"{args.minutes} min"
    print(f"run {args.run}: {sum(z.shape[1] for z in train_z)} train / {valid_all.shape[-1]} valid latent frames, "
          f"{budget_text} per prior on 1 thread; Frechet over {count} x {seconds:.2f} s samples, mean of "
          f"{args.seeds} seeds; floor ({args.reference} files, half vs half) {floor:.1f}; the VAE's reconstruction "
          f"of the {args.reference} files {recon:.1f}\n")
    print("| prior | parameters | steps | valid NLL nats/frame | sampling frames/s | temperature | Frechet "
          "| DNSMOS (T=1) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, parameters, steps, nll, speed, temperature, value in rows:
        dnsmos = f"{mos[name]:.2f}" if name in mos and temperature == 1.0 else ""
        print(f"| {name} | {parameters} | {steps} | {nll} | {speed} | {temperature} | {value:.1f} | {dnsmos} |")
    print(f"| floor: {args.reference} files, half vs half | | | | | | {floor:.1f} | |")
    print(f"\n{args.long_seconds:.0f}-s samples, 5-s windows. Decoded train latents' windows: level "
          f"{train_windows[:, 0].min():.1f}..{train_windows[:, 0].max():.1f} dBFS, flatness "
          f"{train_windows[:, 1].min():.3f}..{train_windows[:, 1].max():.3f} (the training audio itself: "
          f"{audio_windows[:, 0].min():.1f}..{audio_windows[:, 0].max():.1f} dBFS, flatness "
          f"{audio_windows[:, 1].min():.3f}..{audio_windows[:, 1].max():.3f}); train latent 5-s window std "
          f"(mean over dims) {latent_std.mean(1).min():.2f}..{latent_std.mean(1).max():.2f}\n")
    print("| prior | temperature | windows | level dBFS min | max | flatness min | max | audio windows in decoded "
          "train range | latent windows in range | latent window std min | max |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for row in long_rows:
        name, temperature, n, lo, hi, flo, fhi, inside, alive, smin, smax = row
        print(f"| {name} | {temperature} | {n} | {lo:.1f} | {hi:.1f} | {flo:.3f} | {fhi:.3f} | {inside:.0%} "
              f"| {alive:.0%} | {smin:.2f} | {smax:.2f} |")


if __name__ == "__main__":
    main()
