"""Where a frame model's mel distance comes from, scale by scale: for each of the mel distance's analysis windows
(2048, 1024 and 512 samples) its L1 between the log-mel magnitudes of the input and of a sound made from it, and
their signed mean (the sound's level against the input's, in nats: below zero, quieter at that scale). Three
sounds per file, each at the run's training level, as `audiovae evaluate` scores reconstructions:

- reconstruction: the model's magnitudes (posterior means decoded) through the run's synthesis (evaluate's);
- true magnitudes: the input's own magnitudes through the same synthesis (its ceiling on this material);
- input's phases: the model's magnitudes under the input's own STFT phases, no synthesis method at all.

    python bench/mel_levels.py RUN /tmp/corp/music/heldout          # a run of a spectrogram recipe
    python bench/mel_levels.py RUN /tmp/corp/music/train --files 8  # the same on its training music

Each file is read whole (--files takes every n-th of the sorted files). Prints a markdown table.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from audiovae.data.prepare import find_audio
from audiovae.dsp.distances import log_mels
from audiovae.errors import UserError
from audiovae.synthesis.model import load


def sounds(model, wave: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The input at the training level and the three sounds made from it (module docstring), equal lengths."""
    gain = model.level_scales(wave)[0]  # the training normalization's gain for this file
    x = (wave * np.float32(gain)).astype(np.float32)
    pieces = list(model.reconstruction_chunks(wave))
    true = torch.from_numpy(np.concatenate([p.features for p in pieces], axis=1))[None]
    rebuilt = torch.from_numpy(np.concatenate([p.reconstruction for p in pieces], axis=1))[None]
    synthesis, mel = model.recipe.synthesis, model.recipe.data.mel
    with torch.no_grad():
        made = {"reconstruction": model.representation.to_audio(rebuilt, synthesis)[0].numpy(),
                "true magnitudes": model.representation.to_audio(true, synthesis)[0].numpy()}
        window = torch.hann_window(mel.n_fft)
        spectrum = torch.stft(torch.from_numpy(x), mel.n_fft, mel.hop_length, window=window, return_complex=True)
        steps = rebuilt.shape[-1]
        magnitude = torch.exp(torch.cat([rebuilt[0], rebuilt[0, :, -1:]], -1))  # the last centred frame, as synthesis
        frames = min(spectrum.shape[-1], steps + 1)
        phased = magnitude[:, :frames] * torch.sgn(spectrum[:, :frames])
        made["input's phases"] = torch.istft(phased, mel.n_fft, mel.hop_length, window=window,
                                             length=(frames - 1) * mel.hop_length).numpy()
    length = min(len(x), *(len(v) for v in made.values()))
    return x[:length], {name: v[:length] for name, v in made.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="A run folder of a spectrogram recipe.")
    parser.add_argument("folder", help="Audio files to score (searched recursively).")
    parser.add_argument("--files", type=int, default=0, help="Take this many files, evenly spaced (0: all).")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load(args.run, device="cpu")
    if model.recipe.data.features != "spectrogram":
        raise SystemExit(f"error: {args.run}: a spectrogram recipe's run is needed (its features are "
                         f"{model.recipe.data.features!r})")
    try:
        paths = sorted(source.path for source in find_audio([Path(args.folder)]))  # prepare's search
    except UserError as error:
        raise SystemExit(f"error: {error}") from None
    if args.files:
        paths = [paths[i] for i in np.linspace(0, len(paths) - 1, min(args.files, len(paths))).round().astype(int)]
    if not paths:
        raise SystemExit(f"error: no audio files under {args.folder}")
    scores: dict[str, dict[int, list[tuple[float, float]]]] = {}
    for path in paths:
        x, made = sounds(model, model.load_audio(path))
        for name, y in made.items():
            pairs = log_mels(torch.from_numpy(x)[None, None], torch.from_numpy(np.ascontiguousarray(y))[None, None],
                             model.sample_rate)  # mel_distance's own windows
            for window, mx, my in pairs:
                difference = my - mx
                scores.setdefault(name, {}).setdefault(window, []).append(
                    (difference.abs().mean().item(), difference.mean().item()))
    windows = list(next(iter(scores.values())))  # each window that fitted a file
    print(f"{args.run}: {len(paths)} files of {args.folder}, synthesis {model.recipe.synthesis}\n")
    print("| sound | mel distance | " + " | ".join(f"{w}: L1 (signed)" for w in windows) + " |")
    print("| --- | ---: |" + " ---: |" * len(windows))
    for name, by_window in scores.items():
        means = {w: np.mean(v, axis=0) for w, v in by_window.items()}
        print(f"| {name} | {np.mean([m[0] for m in means.values()]):.4f} | "
              + " | ".join(f"{means[w][0]:.3f} ({means[w][1]:+.3f})" for w in windows) + " |")


if __name__ == "__main__":
    main()
