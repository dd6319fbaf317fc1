"""Training throughput of each recipe family: parameters, audio seconds trained per wall second, steps/s,
peak memory. CPU always (float32, and bf16 autocast too where the CPU has bf16 matrix units: what
`train.precision: auto` picks there), CUDA (bf16 autocast) when present.

    python bench/train.py [--steps 20] [--recipes quickstart speech mel documents-example]
                          [--threads N] [--background-load N]

--background-load N runs N busy-looping processes during the measurement (another user's job on a shared
machine) and stops them after; --threads sets torch's CPU threads (default: audiovae.compute.threads.choose_threads).
"""

from __future__ import annotations

import argparse
import contextlib
import resource
import subprocess
import sys
import time

import torch

from audiovae.compute.allocator import keep_freed_memory
from audiovae.compute.device import autocast_for, cpu_has_bf16_units
from audiovae.compute.threads import apply_threads, choose_threads
from audiovae.config.recipe import load_recipe
from audiovae.models import build_model, get_family
from audiovae.training.loop import adam
from audiovae.training.losses import vae_loss
from audiovae.training.vae_stage import bf16_agreement, bf16_agrees


def batch_for(recipe, device):
    length = recipe.training_samples
    representation = recipe.data.representation
    if not representation.is_waveform:  # log-mel-like frames
        return torch.randn(recipe.train.batch_size, representation.channels,
                           length // representation.samples_per_step, device=device) - 5.0
    t = torch.arange(length, device=device) / recipe.data.sample_rate
    tone = 0.5 * torch.sin(2 * torch.pi * 220 * t) + 0.05 * torch.randn(recipe.train.batch_size, 1, length,
                                                                        device=device)
    return tone.reshape(recipe.train.batch_size, 1, length)


def measure(recipe, device: torch.device, steps: int, precision: str) -> dict:
    torch.manual_seed(0)
    model = build_model(recipe).to(device)
    optimizer = adam(model.parameters(), recipe.train.learning_rate, decoupled=True)
    x = batch_for(recipe, device)
    # train's check, as train runs it: on the fresh weights (here on this synthetic batch, where the frame models'
    # gradients agree less than on real frames: cosine 0.995-0.9994 against 0.99998 on real voices and music)
    agreement = bf16_agreement(recipe, model, x, device) if precision == "bfloat16" else None

    def step():
        with autocast_for(device, precision):
            out = model(x)
        loss = vae_loss(x, out.reconstruction.float(), out.posterior, recipe.loss, recipe.data.sample_rate, 1000)
        optimizer.zero_grad(set_to_none=True)
        loss.total.backward()
        optimizer.step()

    for _ in range(3):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    audio = steps * recipe.train.batch_size * recipe.training_samples / recipe.data.sample_rate
    peak = (torch.cuda.max_memory_allocated() if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"params": sum(p.numel() for p in model.parameters()), "steps_per_second": steps / seconds,
            "audio_per_second": audio / seconds, "peak_mb": peak / 2**20, "agreement": agreement}


@contextlib.contextmanager
def background_load(processes: int):
    """Keep `processes` other CPU-bound processes running inside the block."""
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(processes)]
    try:
        time.sleep(0.5 if busy else 0.0)  # let them reach full speed before measuring
        yield
    finally:
        for process in busy:
            process.kill()
            process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--recipes", nargs="+", default=["quickstart", "spectrogram", "speech", "mel", "documents-example"])
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads. Default: the free cores (audiovae.compute.threads.choose_threads).")
    parser.add_argument("--background-load", type=int, default=0, metavar="N",
                        help="Busy processes running during the measurement (a shared, loaded machine).")
    args = parser.parse_args()
    with background_load(args.background_load):
        apply_threads(choose_threads(args.threads))  # chosen under the load, as train would be
        keep_freed_memory()  # as train() does
        run(args)


def agreement_cell(values: tuple[float, float] | None, recipe) -> str:
    """bf16_agreement's figures, and whether `train.precision: auto` trains the recipe in bf16 on this CPU."""
    if values is None:
        return ""
    apart, cosine = values
    if not get_family(recipe.model.family).cpu_bf16:
        return f"{apart:.2%}, {cosine:.4f} (auto trains float32: the family gains nothing on a CPU)"
    return f"{apart:.2%}, {cosine:.4f} ({'auto keeps bf16' if bf16_agrees(apart, cosine) else 'auto trains float32'})"


def run(args: argparse.Namespace) -> None:
    load = f" under {args.background_load} busy background processes" if args.background_load else ""
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads{load}"
          + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ", no CUDA"))
    print("\n| recipe | family | device | precision | params | batch x samples | steps/s | audio s / wall s | peak memory MB "
          "| bf16 against float32: loss apart, gradient cosine |")
    print("| --- | --- | --- | --- | ---: | --- | ---: | ---: | ---: | --- |")
    settings = [(torch.device("cpu"), "float32")] + ([(torch.device("cpu"), "bfloat16")] if cpu_has_bf16_units() else [])
    settings += [(torch.device("cuda"), "bfloat16")] if torch.cuda.is_available() else []
    variants = [(name, load_recipe(f"recipes/{name}.yaml")) for name in args.recipes]
    if "quickstart" in args.recipes:  # does the PQMF front end pay? the same hop (256) without sub-bands
        variants.append(("quickstart, no PQMF", load_recipe("recipes/quickstart.yaml", overrides=(
            "model.bands=1", "model.strides=[4, 4, 4, 4]"))))
    for name, recipe in variants:
        for device, precision in settings:
            r = measure(recipe, device, args.steps, precision)
            print(f"| {name} | {recipe.model.family} | {device.type} | {precision} | {r['params'] / 1e6:.2f} M | "
                  f"{recipe.train.batch_size} x {recipe.training_samples} | {r['steps_per_second']:.2f} | "
                  f"{r['audio_per_second']:.1f} | {r['peak_mb']:.0f} | {agreement_cell(r['agreement'], recipe)} |", flush=True)
    print("\nCPU peak memory is the process's maximum resident set so far (it only grows down the table).")


if __name__ == "__main__":
    main()
