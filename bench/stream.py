"""Latency and real-time factor of exported models run block by block, as a live host would.

For each block size (multiples of the hop between 128 and 4096 samples), engine (TorchScript, ONNX Runtime)
and thread count (one, all cores), times a signal streamed through the export of a recipe's model with fresh
weights (speed does not depend on training), causal and offline, and prints a markdown table:

    python bench/stream.py [--recipe recipes/quickstart.yaml] [--seconds 8] [--passes 3] [--blocks 512 1024]
        [--threads 1]

Each row is the best of --passes passes over the signal (worst block and misses from that pass).

When the recipe has a `prior:` section, a second table times live generation on one thread: the exported
`prior` method (fresh weights of the recipe's prior) making each block's latent frames, then `decode`.

latency = block + the model's delay (the causal PQMF pair). The offline model cannot stream: its rows run
each block as an independent whole-signal pass (audible seams), for speed only.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from audiovae.config.recipe import load_recipe  # noqa: E402
from audiovae.models import build_model  # noqa: E402
from audiovae.nn.legacy_export import legacy_export  # noqa: E402
from audiovae.priors.learned import build_prior  # noqa: E402
from audiovae.realtime.export import OnnxRunner, export_net  # noqa: E402
from audiovae.realtime.stream_host import open_engine, warm_up  # noqa: E402

BLOCKS = (128, 256, 512, 1024, 2048, 4096)


def export(recipe_path: str, causal: bool, folder: Path, with_prior: bool = False):
    recipe = load_recipe(recipe_path, [f"model.causal={'true' if causal else 'false'}"])
    torch.manual_seed(0)
    prior = build_prior(recipe.prior, recipe.model.latent_size) if with_prior else None
    result = export_net(build_model(recipe).eval(), recipe, folder, prior=prior)
    return result.card


def time_generation(folder: Path, engine: str, block: int, hop: int, rate: int, seconds: float) -> tuple[float, float]:
    """(real-time factor, worst block in ms) of prior -> decode, block by block, on one thread."""
    torch.set_num_threads(1)
    frames = block // hop
    if engine == "torchscript":
        with legacy_export():
            module = torch.jit.load(str(folder / "model.ts"))

        def run() -> None:
            with torch.no_grad():
                module.decode(module.prior(torch.ones(1, 1, frames)))
    else:
        prior, decode = OnnxRunner(folder / "prior.onnx", threads=1), OnnxRunner(folder / "decode.onnx", threads=1)
        one = np.ones((1, 1, 1), np.float32)

        def run() -> None:
            decode(np.concatenate([prior(one) for _ in range(frames)], -1))
    for _ in range(5):
        run()
    times = []
    for _ in range(int(seconds * rate) // block):
        begin = time.perf_counter()
        run()
        times.append(time.perf_counter() - begin)
    return len(times) * block / rate / sum(times), 1000 * max(times)


def time_blocks(folder: Path, engine: str, threads: int, block: int, wave: np.ndarray,
                rate: int, passes: int = 1) -> tuple[float, float, int]:
    """(real-time factor, worst block in ms, misses) for `wave` streamed in blocks of `block` samples: the best of
    `passes` passes from a reset state (as timeit takes the best of its repeats: on a shared machine, what other
    processes take from a pass is noise, not the model's cost); worst block and misses are that pass's."""
    torch.set_num_threads(threads)
    run = warm_up(open_engine(folder, engine), block)  # as `audiovae stream` and a host do on loading
    deadline = block / rate
    best = None
    for _ in range(passes):
        run.reset()
        times = []
        for start in range(0, wave.shape[-1] - block + 1, block):
            begin = time.perf_counter()
            run(wave[..., start : start + block])
            times.append(time.perf_counter() - begin)
        result = (len(times) * deadline / sum(times), 1000 * max(times), sum(t > deadline for t in times))
        best = result if best is None or result[0] > best[0] else best
    return best


def machine_reference() -> float:
    """Microseconds of one fixed small matrix product on one thread (best of 10 rounds of 2000): this machine's
    speed at the time of the table. A shared virtual machine's speed drifts (here up to 1.6x over minutes with
    nothing else running), so tables taken at different times compare only through this number."""
    torch.set_num_threads(1)
    a, b = torch.randn(256, 768), torch.randn(768, 2)
    best = float("inf")
    for _ in range(10):
        begin = time.perf_counter()
        for _ in range(2000):
            torch.mm(a, b)
        best = min(best, (time.perf_counter() - begin) / 2000)
    return 1e6 * best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="recipes/quickstart.yaml")
    parser.add_argument("--seconds", type=float, default=8.0, help="Audio streamed per measurement.")
    parser.add_argument("--passes", type=int, default=3, help="Passes per measurement; the table gives the best.")
    parser.add_argument("--blocks", type=int, nargs="+", default=list(BLOCKS), help="Block sizes to time.")
    parser.add_argument("--threads", type=int, nargs="+", default=None, help="Thread counts (default: 1 and all).")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for causal in (True, False):
            folder = Path(tmp) / ("causal" if causal else "offline")
            card = export(args.recipe, causal, folder)
            rate, hop, latency = card["sample_rate"], card["frame_samples"], card["latency_samples"]
            rng = np.random.default_rng(0)
            wave = (0.3 * rng.standard_normal((1, 1, int(args.seconds * rate)))).astype(np.float32)
            recipe = load_recipe(args.recipe)
            # an offline frame model reflect-pads each block by half its window: shorter blocks cannot run alone
            shortest = 0 if causal or recipe.data.representation.is_waveform else recipe.data.mel.n_fft // 2 + 1
            for block in [b for b in args.blocks if b % hop == 0 and b >= shortest]:
                for engine in ("torchscript", "onnx"):
                    for threads in args.threads or sorted({1, cores}):
                        rtf, worst, misses = time_blocks(folder, engine, threads, block, wave, rate, args.passes)
                        delay = f"{1000 * (block + latency) / rate:.1f}" if causal else "n/a"
                        rows.append(f"| {'causal' if causal else 'offline'} | {block} | {delay} | {engine} | "
                                    f"{threads} | {rtf:.1f}x | {worst:.2f} / {1000 * block / rate:.1f} | {misses} |")
                        print(rows[-1], file=sys.stderr, flush=True)
    print(f"{args.recipe}, {cores} cores, torch {torch.__version__}; machine reference {machine_reference():.1f} us "
          "(a 256x768 by 768x2 matrix product on one thread; lower is faster)\n")
    print("| model | block | latency ms | engine | threads | real-time factor | worst block / deadline ms | misses |")
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    if load_recipe(args.recipe).prior is None:
        return
    generation = []
    with tempfile.TemporaryDirectory() as tmp:
        card = export(args.recipe, True, Path(tmp), with_prior=True)
        rate, hop = card["sample_rate"], card["frame_samples"]
        for block in [b for b in args.blocks if b % hop == 0]:
            for engine in ("torchscript", "onnx"):
                rtf, worst = time_generation(Path(tmp), engine, block, hop, rate, args.seconds)
                generation.append(f"| {block} | {block // hop} | {engine} | {rtf:.1f}x | {worst:.2f} / {1000 * block / rate:.1f} |")
    print("\nlive generation, causal model, one thread: prior -> decode per block\n")
    print("| block | latent frames | engine | real-time factor | worst block / deadline ms |")
    print("|---|---|---|---|---|")
    print("\n".join(generation))


if __name__ == "__main__":
    main()
