"""One picture of what a run does to music: log spectrograms of an input, the run's reconstruction of it and a
sample of its prior (the learned one when the run has one), stacked on one colour scale and one axis in kHz,
so the comb of partials and the noise floor between them can be seen side by side.

    python bench/spectrograms.py runs/<run> [song.flac] [--seconds 10] [--offset 30] [--out spectrograms.png]

Without an audio file it takes the run's first held-out file (the 'valid' split of its dataset's manifest).
Input and reconstruction are at the level the model was trained at, as its prior samples are.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

import audiovae
from audiovae.data.manifest import read_manifest
from audiovae.evaluation.evaluate import held_out_files
from audiovae.io.plots import plot_spectrogram_panels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="A run folder.")
    parser.add_argument("audio", nargs="?", help="An audio file (default: the run's first held-out file).")
    parser.add_argument("--seconds", type=float, default=10.0, help="How much of the input, and of the sample.")
    parser.add_argument("--offset", type=float, default=0.0, help="Where the excerpt starts in the input, seconds.")
    parser.add_argument("--n-fft", type=int, default=2048, help="The pictures' STFT (hop n_fft / 4).")
    parser.add_argument("--seed", type=int, default=0, help="The prior sample's seed.")
    parser.add_argument("--out", type=Path, help="The PNG (default: spectrograms-<run name>.png here).")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = audiovae.load(args.run, device="cpu")
    if args.audio is None:
        files = held_out_files(read_manifest(Path(model.recipe.data.folder)), "valid")
        if not files:
            raise SystemExit(f"error: {model.recipe.data.folder}: no held-out files; name an audio file")
        source = files[0]
    else:
        source = Path(args.audio)
    rate = model.sample_rate
    wave = model.load_audio(source)
    start = int(args.offset * rate) if len(wave) > int((args.offset + args.seconds) * rate) else 0
    wave = model.at_training_level(np.ascontiguousarray(wave[start : start + int(args.seconds * rate)]))
    reconstruction = model.reconstruct(wave)
    prior = "learned" if model.learned_prior else "gaussian"
    sample = model.generate(1, seconds=len(wave) / rate, seed=args.seed)[0]
    out = args.out or Path(f"spectrograms-{Path(args.run).resolve().name}.png")
    written = plot_spectrogram_panels(out, [
        (f"input: {source.name} from {start / rate:g} s", wave),
        (f"reconstruction ({model.recipe.synthesis.method if model.recipe.synthesis else 'waveform'} synthesis)",
         reconstruction),
        (f"{prior}-prior sample (seed {args.seed})", sample)], rate, args.n_fft)
    print(written)


if __name__ == "__main__":
    main()
