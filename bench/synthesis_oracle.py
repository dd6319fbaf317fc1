"""Synthesis methods and STFT analyses chosen by oracle: the true log magnitudes of real recordings, each
synthesis method's sound from them, scored against the input with audiovae's mel and STFT distances
(audiovae.evaluation.metrics, as `audiovae evaluate`). No model: what a frame model's magnitudes could at
best become under each analysis and method. Prints a markdown table, one row per analysis and method.

    python bench/synthesis_oracle.py /tmp/corp/music/heldout --sample-rate 44100
    python bench/synthesis_oracle.py /tmp/corp/voices/heldout --sample-rate 16000 --analyses 512/128 1024/256

Each file gives one excerpt of --seconds from --offset (the whole file when shorter), peak-normalized to -1 dB;
--files takes every n-th of the sorted files so that a folder of many is sampled across it. The magnitudes are
what `prepare` stores (audiovae.dsp.transforms.log_spectrogram, floor 1e-5, the last centred frame dropped)
and the sound is what synthesis in Python makes of a model's (griffin_lim_from_log_magnitude), so a row is
the ceiling of a recipe with that analysis and synthesis section. Methods run with their own iteration counts
(zeros 32, advancing 8, peaks and textured 0) unless given as method:iterations.
The smoothed columns synthesize log magnitudes averaged over 3 bins by 3 frames (oracle(smooth=True));
--perceptual adds PESQ-WB and STOI of the true magnitudes' sound (per excerpt, mean of those with a value).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from audiovae.data.prepare import find_audio
from audiovae.dsp.inversion import SYNTHESIS_METHODS, SynthesisConfig
from audiovae.dsp.transforms import griffin_lim_from_log_magnitude, log_spectrogram
from audiovae.errors import UserError
from audiovae.evaluation import perceptual
from audiovae.evaluation.measures import mean_of_finite
from audiovae.evaluation.metrics import mel_distance_np, stft_distance_np
from audiovae.io.audio import normalize, read_audio, resample


def excerpts(sources: list[str], rate: int, seconds: float, offset: float, files: int) -> list[tuple[str, np.ndarray]]:
    """(name, samples) of up to `files` files found under `sources`, evenly spaced in sorted order."""
    try:
        paths = sorted(found.path for found in find_audio([Path(source) for source in sources]))  # prepare's search
    except UserError as error:
        raise SystemExit(f"error: {error}") from None
    if not paths:
        raise SystemExit(f"error: no audio files under {' '.join(sources)}")
    chosen = [paths[i] for i in np.linspace(0, len(paths) - 1, min(files, len(paths))).round().astype(int)]
    out = []
    for path in chosen:
        samples, file_rate = read_audio(path)
        samples = resample(samples, file_rate, rate)
        start = int(offset * rate) if len(samples) > (offset + seconds) * rate else 0
        out.append((path.name, normalize(samples[start : start + int(seconds * rate)], "peak", -1.0)))
    return out


def oracle(wave: np.ndarray, n_fft: int, hop_length: int, synthesis: SynthesisConfig, smooth: bool = False
           ) -> np.ndarray:
    """The sound `synthesis` makes of wave's own log magnitudes, cut to whole hops (samples,). smooth: the log
    magnitudes averaged over 3 bins by 3 frames first, a stand-in for a model's, which cannot predict the
    random fluctuations of noise (a smooth floor between the peaks, where true magnitudes have maxima)."""
    length = len(wave) // hop_length * hop_length
    x = torch.from_numpy(wave[:length])[None]
    frames = log_spectrogram(x, n_fft, hop_length, 1e-5)[..., :-1]  # as prepare stores them
    if smooth:
        frames = torch.nn.functional.avg_pool2d(frames[None], 3, 1, 1, count_include_pad=False)[0]
    with torch.no_grad():
        return griffin_lim_from_log_magnitude(frames, n_fft, hop_length, synthesis)[0].numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sources", nargs="+", help="Audio files or folders (searched recursively).")
    parser.add_argument("--sample-rate", type=int, default=44100)
    parser.add_argument("--analyses", nargs="+", default=["1024/256", "1024/512", "2048/256", "2048/512", "2048/1024",
                                                          "4096/256", "4096/512", "4096/1024"],
                        help="n_fft/hop_length pairs (a hop of n_fft has no overlap to add: left out).")
    parser.add_argument("--methods", nargs="+", default=["zeros", "advancing", "peaks", "textured", "textured:8"],
                        help="Synthesis methods, each with its own iteration count or as method:iterations.")
    parser.add_argument("--files", type=int, default=4, help="How many files, evenly spaced in sorted order.")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--offset", type=float, default=10.0, help="Where each excerpt starts, in seconds.")
    parser.add_argument("--perceptual", action="store_true",
                        help="Also PESQ-WB and STOI of the true magnitudes' sound (speech; the metrics extra).")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    waves = excerpts(args.sources, args.sample_rate, args.seconds, args.offset, args.files)
    seconds = sum(len(w) for _, w in waves) / args.sample_rate
    print(f"{len(waves)} excerpts, {seconds:.0f} s at {args.sample_rate} Hz: {', '.join(n for n, _ in waves)}\n")
    extra = " PESQ-WB | STOI |" if args.perceptual else ""
    print("| n_fft / hop | method (iterations) | mel distance | STFT distance | smoothed: mel | smoothed: STFT "
          f"|{extra} synthesis x real time |")
    print("| --- | --- | ---: | ---: | ---: | ---: |" + " ---: |" * (3 if args.perceptual else 1))
    for analysis in args.analyses:
        n_fft, hop_length = (int(v) for v in analysis.split("/"))
        for spec in args.methods:
            method, _, iterations = spec.partition(":")
            if method not in SYNTHESIS_METHODS:
                raise SystemExit(f"error: --methods: {method!r} is not one of {', '.join(SYNTHESIS_METHODS)}")
            synthesis = SynthesisConfig(method, int(iterations) if iterations else None)
            scores, spent = {False: ([], []), True: ([], [])}, 0.0
            heard: dict[str, list[float]] = {"pesq": [], "stoi": []}
            for _, wave in waves:
                for smooth, (mels, stfts) in scores.items():
                    began = time.perf_counter()
                    out = oracle(wave, n_fft, hop_length, synthesis, smooth)
                    spent += time.perf_counter() - began
                    mels.append(mel_distance_np(wave[: len(out)], out, args.sample_rate))
                    stfts.append(stft_distance_np(wave[: len(out)], out))
                    if args.perceptual and not smooth:
                        heard["pesq"].append(perceptual.pesq_wb(wave[: len(out)], out, args.sample_rate).value)
                        heard["stoi"].append(perceptual.stoi(wave[: len(out)], out, args.sample_rate).value)
            columns = [f"{np.mean(v):.3f}" for pair in scores.values() for v in pair]
            if args.perceptual:
                columns += [f"{mean_of_finite(heard['pesq']):.2f}", f"{mean_of_finite(heard['stoi']):.3f}"]
            print(f"| {n_fft} / {hop_length} | {method} ({synthesis.iterations}) | " + " | ".join(columns)
                  + f" | {2 * seconds / spent:.0f} |", flush=True)


if __name__ == "__main__":
    main()
