"""Train several recipes for the same wall-clock budget on the same corpus, evaluate each on the same
held-out files, and print quality next to cost as a markdown table (and write it as CSV).

    python bench/compare.py [--minutes 4.5] [--corpus data/demo] [--recipes quickstart quickstart-causal mel]
    python bench/compare.py --corpus voices/train --heldout voices/heldout --steps live=3550 quickstart-causal=1975 \
        --prior-steps 150 --threads 1 --recipes live quickstart-causal

A name is a recipe in recipes/ or a variant below (a recipe with overrides). --minutes is the VAE's budget;
a recipe's learned prior (its `prior:` section) trains after it within its own budget, reported apart.
--steps NAME=N trains NAME for N steps instead (no time limit; the learning-rate schedule follows the steps):
equal wall time on a loaded machine, with N = the recipe's steps per minute on a quiet one times the budget.
--heldout DIR evaluates every run on all the files of a second corpus (held out by speaker or by track)
instead of the held-out files of --corpus. --set applies an override to every recipe (e.g. data.sample_rate=44100).

Every recipe prepares the corpus with its own audio settings but the same split seed and valid fraction,
so the held-out files are the same for all of them.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import platform
import time
from pathlib import Path

import torch

from audiovae.config.recipe import load_recipe
from audiovae.data.prepare import prepare
from audiovae.evaluation.evaluate import evaluate
from audiovae.io.run_folder import RunFolder
from audiovae.training.vae_stage import train

L1 = ("loss.terms.mel_weighted_l1=0", "loss.terms.l1=1.0")  # music-frames' loss before round 13
CROP64 = ("train.crop_samples=16384", "train.batch_size=32")  # 32 random crops of 64 frames a step (round 17)
VARIANTS = {"quickstart-causal": ("quickstart", ("model.causal=true",)),
            "quickstart-causal-seed1": ("quickstart", ("model.causal=true", "train.seed=1")),
            "live-seed1": ("live", ("train.seed=1",)),
            "spectrogram-seed1": ("spectrogram", ("train.seed=1",)),
            "spectrogram-latent32": ("spectrogram", ("model.latent_size=32",)),
            "spectrogram-l1": ("spectrogram", ("loss.terms.frame_convergence=0",)),  # the recipe before frame_convergence
            "spectrogram-l1-beta1e-4": ("spectrogram", ("loss.terms.frame_convergence=0", "loss.beta=0.0001")),
            "music-frames-convergence": ("music-frames", (*L1, "loss.terms.frame_convergence=1.0")),
            "live-l1": ("live", ("loss.terms.frame_convergence=0",)),  # the recipe before frame_convergence
            "live-44k-seed1": ("live-44k", ("train.seed=1",)),
            "live-44k-wide": ("live-44k", ("model.channels=128", "model.max_channels=256")),
            "live-44k-wide-seed1": ("live-44k", ("model.channels=128", "model.max_channels=256", "train.seed=1")),
            "live-44k-narrow": ("live-44k", ("model.channels=32", "model.max_channels=64", "model.latent_size=16")),
            "music-frames-ch64": ("music-frames", (*L1, "model.channels=64", "model.max_channels=128")),
            "music-frames-ch256": ("music-frames", (*L1, "model.channels=256")),
            "music-frames-lr4e-3": ("music-frames", (*L1, "train.learning_rate=0.004")),
            "music-frames-prior-noise0.1": ("music-frames", (*L1, "prior.input_noise=0.1")),
            # music-frames' latent before round 12 (24 wide, beta 1e-3), and round 5's variants of it
            "music-frames-latent24": ("music-frames", (*L1, "model.latent_size=24", "loss.beta=0.001")),
            "music-frames-latent64": ("music-frames", (*L1, "model.latent_size=64", "loss.beta=0.001")),
            "music-frames-latent64-beta1e-4": ("music-frames", (*L1, "model.latent_size=64", "loss.beta=0.0001")),
            # round 13: music-frames before mel_weighted_l1 (round 12's recipe), and what was tried beside the term
            "music-frames-l1": ("music-frames", L1),
            "music-frames-l1-bs8": ("music-frames", (*L1, "train.batch_size=8")),
            "music-frames-l1-nfft2048": ("music-frames", (*L1, "data.mel.n_fft=2048")),
            "music-frames-l1-max384": ("music-frames", (*L1, "model.max_channels=384")),
            "music-frames-l1-max512": ("music-frames", (*L1, "model.max_channels=512")),
            "music-frames-max384": ("music-frames", ("model.max_channels=384",)),
            # round 14: a lighter KL weight, a wider kernel, an EMA of the weights, two learning-rate schedules
            "music-frames-beta3e-5": ("music-frames", ("loss.beta=0.00003",)),
            "music-frames-k5": ("music-frames", ("model.kernel_size=5",)),
            "music-frames-ema": ("music-frames", ("train.ema_decay=0.999",)),
            "music-frames-decay0.6": ("music-frames", ("train.lr_decay_fraction=0.6",)),
            "music-frames-decay1": ("music-frames", ("train.lr_decay_fraction=1.0",)),
            # round 17: augmentation, for a model that sees 31 minutes of music 60 times in 10 minutes
            "music-frames-crop64": ("music-frames", CROP64),
            "music-frames-gain6": ("music-frames", ("train.gain_db=6.0",)),
            "music-frames-crop64-t2": ("music-frames", (*CROP64, "train.transpose_semitones=2.0")),
            "music-frames-crop64-t5": ("music-frames", (*CROP64, "train.transpose_semitones=5.0")),
            "music-frames-crop64-t8": ("music-frames", (*CROP64, "train.transpose_semitones=8.0")),
            "music-frames-crop64-t5-max384": ("music-frames", (*CROP64, "train.transpose_semitones=5.0",
                                                               "model.max_channels=384")),
            # round 18: transpositions of whole segments at the recipe's batch (the crops alone cost the prior)
            "music-frames-t5": ("music-frames", ("train.transpose_semitones=5.0",)),
            # round 18: decoupled weight decay (AdamW), the recipe has none
            "music-frames-wd0.05": ("music-frames", ("train.weight_decay=0.05",)),
            "music-frames-wd0.2": ("music-frames", ("train.weight_decay=0.2",)),
            "live-16ms": ("live", ("data.mel.n_fft=256", "data.mel.hop_length=64", "model.strides=[2, 2]")),
            "quickstart-no-prior": ("quickstart", ("prior=null",))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=4.5, help="Training wall-clock budget per recipe.")
    parser.add_argument("--corpus", default="data/demo")
    parser.add_argument("--recipes", nargs="+", default=["quickstart", "spectrogram", "documents-example", "mel"])
    parser.add_argument("--out", default="bench/results", help="Folder for data, runs and the CSV.")
    parser.add_argument("--steps", nargs="*", default=[], metavar="NAME=N",
                        help="Train NAME for N steps instead of --minutes (equal wall time measured on a quiet machine).")
    parser.add_argument("--prior-steps", type=int, default=None, help="Learned prior steps instead of its minutes.")
    parser.add_argument("--heldout", default=None, help="Evaluate on all files of this corpus instead.")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="An override for every recipe.")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: the free cores).")
    args = parser.parse_args()
    if args.threads:  # here and in training, whose own choice (the cores free when it starts) would override it
        torch.set_num_threads(args.threads)
        args.overrides.append(f"train.num_threads={args.threads}")
    steps = dict(_pair(x) for x in args.steps)
    out = Path(args.out)
    rows = []
    for name in args.recipes:
        base, variant = VARIANTS.get(name, (name, ()))
        variant = (*variant, *args.overrides)
        recipe_path = Path(f"recipes/{base}.yaml")
        recipe = load_recipe(recipe_path, variant)
        data_dir = out / "data" / name
        data = dataclasses.replace(recipe.data, folder=str(data_dir))
        prepare([args.corpus], data_dir, data, force=True, progress=False)
        if name in steps:
            budget = ("train.max_minutes=100000", f"train.max_steps={steps[name]}")
        else:
            budget = (f"train.max_minutes={args.minutes}", "train.max_steps=1000000")
        if args.prior_steps is not None and recipe.prior is not None:
            budget = (*budget, "prior.max_minutes=100000", f"prior.max_steps={args.prior_steps}")
        heldout_dir = None
        if args.heldout:
            heldout_dir = out / "data" / f"{name}-heldout"
            prepare([args.heldout], heldout_dir, dataclasses.replace(data, folder=str(heldout_dir), valid_fraction=0.0),
                    force=True, progress=False)
        overrides = (*variant, f"data.folder={data_dir}", *budget)
        started = time.monotonic()
        result = train(recipe_path, overrides=overrides, runs_root=out / "runs", progress=False)
        wall = time.monotonic() - started
        lines = [json.loads(x) for x in RunFolder(result.run_dir).metrics_path.read_text().splitlines()]
        rates = [x["audio_seconds_per_second"] for x in lines if x["split"] == "train"]
        if heldout_dir is None:
            metrics = evaluate(result.run_dir, data=data_dir, progress=False, runs_root=out / "runs").metrics
        else:
            metrics = evaluate(result.run_dir, data=heldout_dir, split="train", progress=False,
                               runs_root=out / "runs").metrics
        from audiovae.synthesis.model import load

        model = load(result.run_dir)
        start = time.perf_counter()
        model.generate(1, 10.0)  # with the run's learned prior when it has one
        generate_rtf = 10.0 / (time.perf_counter() - start)
        rec = metrics["reconstruction"]
        rows.append({
            "recipe": name, "family": recipe.model.family,
            "parameters": sum(p.numel() for p in model.net.parameters()),
            "steps": result.step, "train_minutes": round(wall / 60, 2),
            "train_audio_s_per_s": round(sum(rates) / max(len(rates), 1), 1),
            "mel_distance": round(rec["model/mel_distance"], 3), "stft_distance": round(rec["model/stft_distance"], 3),
            "si_sdr_db": round(rec["model/si_sdr"], 2),
            "pesq_wb": _round(rec.get("model/pesq_wb")), "stoi": _round(rec.get("model/stoi"), 3),
            "dnsmos_ovrl": _round(((metrics.get("dnsmos") or {}).get("model") or {}).get("ovrl")),
            "dnsmos_prior": _round(((metrics.get("dnsmos") or {}).get("prior samples") or {}).get("ovrl")),
            "comb_reconstruction": _round(metrics["comb"].get("model")),
            "comb_prior_samples": _round(metrics["comb"].get("prior samples")),
            "frechet": round(metrics["generation"]["frechet_prior_vs_heldout"], 2),
            "frechet_learned": _round(metrics["generation"].get("frechet_learned_vs_heldout"), 1),
            "nll_gaussian": _round(metrics["generation"]["nll_per_frame"].get("gaussian"), 1),
            "nll_learned": _round(metrics["generation"]["nll_per_frame"].get("learned"), 1),
            "frechet_floor": round(metrics["generation"].get("frechet_heldout_half_vs_half", float("nan")), 2),
            "mulaw_mel_distance": round(rec["mu-law reference/mel_distance"], 3),
            "opus_pesq_wb": _round(rec.get("opus reference/pesq_wb")),
            "generate_rtf": round(generate_rtf, 1),
        })
        print(f"{name}: done ({result.step} steps)", flush=True)
    keys = list(rows[0])
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "compare.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, keys)
        writer.writeheader()
        writer.writerows(rows)
    print(f"\n{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"{_budget(args, steps)}, held-out files of {args.heldout or args.corpus}\n")
    print("| " + " | ".join(keys) + " |")
    print("|" + " --- |" * len(keys))
    for row in rows:
        print("| " + " | ".join(str(row[k]) for k in keys) + " |")
    print(f"\nwrote {out / 'compare.csv'}")


def _pair(text: str) -> tuple[str, int]:
    name, _, count = text.partition("=")
    return name, int(count)


def _budget(args, steps: dict[str, int]) -> str:
    if not steps:
        return f"{args.minutes:g} min of training each"
    return "training steps " + ", ".join(f"{k} {v}" for k, v in steps.items()) + f" (others {args.minutes:g} min)"


def _round(value, digits: int = 2):
    return None if value is None else round(value, digits)


if __name__ == "__main__":
    main()
