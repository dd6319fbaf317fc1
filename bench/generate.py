"""Real-time factor of generate and reconstruct for each model family, at batch 1 and batched.

Builds each recipe's model with fresh weights (speed does not depend on training), on CPU and on CUDA
when present:

    python bench/generate.py [--seconds 10] [--recipes quickstart speech mel documents-example]
    python bench/generate.py --long 600     # + `audiovae generate -n 3 --seconds 600`, learned prior vs N(0, I)

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

from audiovae.config.recipe import load_recipe
from audiovae.io.checkpoint import save_checkpoint
from audiovae.io.run_folder import RunFolder
from audiovae.models import build_model
from audiovae.synthesis.model import load


def model_for(name: str, folder: Path, device: str):
    recipe = load_recipe(f"recipes/{name}.yaml")
    torch.manual_seed(0)
    path = folder / f"{name}.pt"
    save_checkpoint(path, {"recipe": recipe.to_dict(), "step": 0, "model": build_model(recipe).state_dict()})
    return load(path, device=device)


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
    from audiovae.priors.learned import PriorConfig, build_prior

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
    parser.add_argument("--recipes", nargs="+", default=["quickstart", "spectrogram", "speech", "mel", "documents-example"])
    parser.add_argument("--long", type=float, default=None, metavar="SECONDS",
                        help="Also time `generate -n 3 --seconds SECONDS` with each prior (peak memory too).")
    args = parser.parse_args()
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads"
          + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ", no CUDA"))
    print(f"\nx real time = audio seconds produced per wall second ({args.seconds:g} s sounds; the fastest of 5 calls, "
          "batched: of 2)\n")
    print("| recipe | family | device | generate, batch 1 | generate, batch "
          f"{args.batch} | reconstruct, batch 1 |")
    print("| --- | --- | --- | ---: | ---: | ---: |")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.recipes:
            for device in devices:
                model = model_for(name, Path(tmp), device)
                one = timed(lambda m=model: m.generate(1, args.seconds))
                many = timed(lambda m=model: m.generate(args.batch, args.seconds, batch_size=args.batch), 2)
                t = np.arange(int(args.seconds * model.sample_rate)) / model.sample_rate
                tone = (0.5 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
                rec = timed(lambda m=model, x=tone: m.reconstruct(x))
                print(f"| {name} | {model.recipe.model.family} | {device} | {args.seconds / one:.0f}x | "
                      f"{args.batch * args.seconds / many:.0f}x | {args.seconds / rec:.0f}x |", flush=True)
        if args.long:
            long_rows(args.long, Path(tmp))


if __name__ == "__main__":
    main()
