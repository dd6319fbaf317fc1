"""Real-time factor of generate and reconstruct for each model family, at batch 1 and batched.

Builds each recipe's model with fresh weights (speed does not depend on training), on CPU and on CUDA
when present:

    python bench/generate.py [--seconds 10] [--recipes quickstart speech mel documents-example]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from audiovae.checkpoint import save_checkpoint
from audiovae.config import load_recipe
from audiovae.models import build_model
from audiovae.synth import load


def model_for(name: str, folder: Path, device: str):
    recipe = load_recipe(f"recipes/{name}.yaml")
    torch.manual_seed(0)
    path = folder / f"{name}.pt"
    save_checkpoint(path, {"recipe": recipe.to_dict(), "step": 0, "model": build_model(recipe).state_dict()})
    return load(path, device=device)


def timed(function, repeats: int = 3) -> float:
    function()  # warm-up
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        function()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="Duration of each generated sound.")
    parser.add_argument("--batch", type=int, default=8, help="Batch size of the batched rows.")
    parser.add_argument("--recipes", nargs="+", default=["quickstart", "speech", "mel", "documents-example"])
    args = parser.parse_args()
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads"
          + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ", no CUDA"))
    print(f"\nx real time = audio seconds produced per wall second ({args.seconds:g} s sounds)\n")
    print("| recipe | family | device | generate, batch 1 | generate, batch "
          f"{args.batch} | reconstruct, batch 1 |")
    print("| --- | --- | --- | ---: | ---: | ---: |")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.recipes:
            for device in devices:
                model = model_for(name, Path(tmp), device)
                one = timed(lambda m=model: m.generate(1, args.seconds))
                many = timed(lambda m=model: m.generate(args.batch, args.seconds, batch_size=args.batch), 1)
                t = np.arange(int(args.seconds * model.sample_rate)) / model.sample_rate
                tone = (0.5 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
                rec = timed(lambda m=model, x=tone: m.reconstruct(x))
                print(f"| {name} | {model.recipe.model.family} | {device} | {args.seconds / one:.0f}x | "
                      f"{args.batch * args.seconds / many:.0f}x | {args.seconds / rec:.0f}x |", flush=True)


if __name__ == "__main__":
    main()
