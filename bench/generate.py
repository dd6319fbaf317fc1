"""Real-time factor of generate and reconstruct for each model family, at batch 1 and batched.

Builds each recipe's model with fresh weights and, where the recipe has a `prior:` section, a fresh learned prior
of that design (speed does not depend on training), on CPU and on CUDA when present:

    python bench/generate.py [--seconds 10] [--recipes spectrogram live-44k frame-44k-2048-512 ...]
    python bench/generate.py --long 600     # + `audiovae generate -n 3 --seconds 600`, learned prior vs N(0, I)

A row is a recipe of recipes/ or a variant below (a recipe with `--set` overrides: the 44.1 kHz frame models,
and prior designs). "learned" times `model.generate(1, seconds)` with the run's learned prior (what the CLI
uses), "N(0, I)" the same without it; "prior" is the prior's share: its sampling alone, timed the same way.
The long rows run the real command in a child process and report its wall time and peak resident memory
(quickstart with a fresh learned prior of the default size: speed does not depend on training either).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from audiovae.compute.allocator import keep_freed_memory
from audiovae.config.recipe import load_recipe
from audiovae.io.checkpoint import save_checkpoint, weights_sha256
from audiovae.io.run_folder import RunFolder
from audiovae.models import build_model
from audiovae.priors.learned import build_prior
from audiovae.synthesis.model import load

# the spectrogram recipe's flow prior (recipes/spectrogram.yaml), whatever the recipe it is put on has
FLOW_PRIOR = ["prior.kind=flow", "prior.hidden_size=64", "prior.layers=4", "prior.couplings=8", "prior.group_frames=8",
              "prior.mixtures=1"]
# the GRU prior as recipes/spectrogram.yaml describes it (its prior until 0.3 round 10, music-frames' until round 14)
GRU_PRIOR = ["prior.kind=gru", "prior.hidden_size=256", "prior.layers=2", "prior.mixtures=8", "prior.input_noise=0.03",
             "prior.learning_rate=0.002"]
VARIANTS: dict[str, tuple[str, list[str]]] = {  # row name -> (recipe, overrides)
    # the 16-kHz frame model's design at 44.1 kHz with 46-ms windows: 1025 bins, 43 or 21.5 latent frames a second
    "frame-44k-2048-512": ("spectrogram", ["data.sample_rate=44100", "data.mel.n_fft=2048", "data.mel.hop_length=512",
                                           "data.segment_samples=65536", "model.latent_size=32"]),
    "frame-44k-2048-1024": ("spectrogram", ["data.sample_rate=44100", "data.mel.n_fft=2048",
                                            "data.mel.hop_length=1024", "data.segment_samples=131072",
                                            "model.latent_size=32"]),
    # the learned prior's designs on the 16-kHz frame model: what the prior's size costs per frame
    "spectrogram+conv-prior": ("spectrogram", ["prior.kind=conv"]),
    "spectrogram+gru-128": ("spectrogram", [*GRU_PRIOR, "prior.hidden_size=128"]),
    "spectrogram+gru": ("spectrogram", GRU_PRIOR),
    "spectrogram+flow": ("spectrogram", FLOW_PRIOR),
    "spectrogram+flow-g4": ("spectrogram", ["prior.kind=flow", "prior.group_frames=4"]),
    # music at 44.1 kHz (issue 30): its GRU prior until round 14, the spectrogram recipe's flow (music-frames' own
    # since), and that flow without Griffin-Lim
    "music-frames+gru": ("music-frames", GRU_PRIOR),
    "music-frames+flow": ("music-frames", FLOW_PRIOR),
    "music-frames+flow+iter0": ("music-frames", [*FLOW_PRIOR, "synthesis.iterations=0"]),
    # fewer Griffin-Lim iterations on music-frames (round 16: 2 of them give up 0.002 of mel distance against 8)
    "music-frames+iter2": ("music-frames", ["synthesis.iterations=2"]),
    "music-frames+iter4": ("music-frames", ["synthesis.iterations=4"]),
}
DEFAULT_ROWS = ["quickstart", "spectrogram", "live-44k", "frame-44k-2048-512", "frame-44k-2048-1024", "speech", "mel",
                "documents-example"]


def model_for(name: str, folder: Path, device: str):
    """A run folder of `name` (a recipe or a VARIANTS row) with fresh weights and, when its recipe has a prior
    section, a fresh learned prior recorded as trained on those weights; loaded as audiovae.load loads a run."""
    recipe_name, overrides = VARIANTS.get(name, (name, []))
    recipe = load_recipe(f"recipes/{recipe_name}.yaml", overrides)
    torch.manual_seed(0)
    run = RunFolder(folder / name)
    weights = build_model(recipe).state_dict()
    save_checkpoint(run.checkpoint("best"), {"recipe": recipe.to_dict(), "step": 0, "model": weights})
    if recipe.prior is not None:
        prior = build_prior(recipe.prior, recipe.model.latent_size)
        save_checkpoint(run.prior.checkpoint("best"), {"prior_config": dataclasses.asdict(recipe.prior),
                                                       "latent_size": recipe.model.latent_size,
                                                       "model": prior.state_dict(),
                                                       "vae_weights_sha256": weights_sha256(weights)})
    return load(run.path, device=device)


CHILD = """
import resource, sys, time
from audiovae.cli.main import main
start = time.perf_counter()
try:
    main(sys.argv[1:])
except SystemExit as exit:
    if exit.code:
        raise
print(f"BENCH {time.perf_counter() - start:.3f} {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.1f}")
"""


def long_rows(seconds: float, folder: Path) -> None:
    """`generate -n 3 --seconds SECONDS` with each prior, in a child process: wall time and peak memory."""
    from audiovae.priors.learned import PriorConfig

    recipe = load_recipe("recipes/quickstart.yaml")
    torch.manual_seed(0)
    run = RunFolder(folder / "runs" / "quickstart")
    save_checkpoint(run.checkpoint("best"),
                    {"recipe": recipe.to_dict(), "step": 0, "model": build_model(recipe).state_dict()})
    config = PriorConfig()
    prior = build_prior(config, recipe.model.latent_size)
    save_checkpoint(run.prior.checkpoint("best"), {"prior_config": dataclasses.asdict(config),
                                                "latent_size": recipe.model.latent_size, "model": prior.state_dict()})
    print(f"\n`audiovae generate -n 3 --seconds {seconds:g}` (quickstart, 1 thread), in a child process\n")
    print("| prior | wall s | x real time | peak memory MB |")
    print("| --- | ---: | ---: | ---: |")
    for name in ("gaussian", "learned"):
        command = [sys.executable, "-c", CHILD, "generate", "-n", "3", "--seconds", str(seconds), "--prior", name,
                   "--run", str(run), str(folder / f"out-{name}"), "--force"]
        done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        if done.returncode:
            raise SystemExit(done.stderr[-2000:])
        wall, peak = (float(v) for v in done.stdout.split("BENCH ")[1].split())
        print(f"| {name} | {wall:.1f} | {3 * seconds / wall:.0f}x | {peak:.0f} |", flush=True)


def timed(function, repeats: int = 5) -> float:
    """Seconds one call takes: the fastest of `repeats` after a warm-up (a shared machine's speed drifts from
    moment to moment; the fastest call is the one least slowed by whatever else ran)."""
    function()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        function()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="Duration of each generated sound.")
    parser.add_argument("--batch", type=int, default=8, help="Batch size of the batched rows.")
    parser.add_argument("--recipes", nargs="+", default=DEFAULT_ROWS,
                        help=f"Recipes of recipes/ or variants ({', '.join(VARIANTS)}).")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's own).")
    parser.add_argument("--long", type=float, default=None, metavar="SECONDS",
                        help="Also time `generate -n 3 --seconds SECONDS` with each prior (peak memory too).")
    args = parser.parse_args()
    keep_freed_memory()  # as the `audiovae` command does
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads"
          + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ", no CUDA"))
    print(f"\nx real time = audio seconds produced per wall second ({args.seconds:g} s sounds; the fastest of 5 calls, "
          "batched: of 2); prior: the learned prior's sampling alone, in ms\n")
    print(f"| row | rate | device | generate, batch 1, learned | prior ms | generate, batch 1, N(0, I) | generate, "
          f"batch {args.batch}, learned | reconstruct, batch 1 |")
    print("| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.recipes:
            for device in devices:
                model = model_for(name, Path(tmp), device)
                learned = "n/a"
                prior_ms = "n/a"
                if model.learned_prior is not None:
                    learned = f"{args.seconds / timed(lambda m=model: m.generate(1, args.seconds)):.0f}x"
                    shape = (1, model.latent_size, model.frames_for(round(args.seconds * model.sample_rate)))
                    prior = model.learned_prior
                    sample = timed(lambda p=prior, s=shape: p.sample(s, generator=[torch.Generator().manual_seed(0)]))
                    prior_ms = f"{1000 * sample:.0f}"
                gaussian = timed(lambda m=model: m.generate(1, args.seconds, prior="gaussian"))
                many = timed(lambda m=model: m.generate(args.batch, args.seconds, batch_size=args.batch), 2)
                t = np.arange(int(args.seconds * model.sample_rate)) / model.sample_rate
                tone = (0.5 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
                rec = timed(lambda m=model, x=tone: m.reconstruct(x))
                print(f"| {name} | {model.sample_rate / 1000:g} kHz | {device} | {learned} | {prior_ms} | "
                      f"{args.seconds / gaussian:.0f}x | {args.batch * args.seconds / many:.0f}x | "
                      f"{args.seconds / rec:.0f}x |", flush=True)
        if args.long:
            long_rows(args.long, Path(tmp))


if __name__ == "__main__":
    main()
