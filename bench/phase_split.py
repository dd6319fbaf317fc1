"""Where a frame model loses quality: its magnitudes or the phases synthesis puts under them.

    python bench/phase_split.py RUN HELD_OUT_DIR [--max-files 40]

For each audio file under HELD_OUT_DIR (speakers the run never heard), at the model's rate and training level,
four sounds are made from one STFT analysis (the run's n_fft and hop, Hann window, centred frames) and scored
against the input with PESQ-WB, STOI, DNSMOS (overall) and the mel distance: the true magnitudes under their
true phases (the analysis itself), the true magnitudes under the run's synthesis (what its phase rule and
iterations cost on perfect magnitudes), the model's magnitudes (posterior mean) under the true phases (what the
magnitudes cost), and the model's magnitudes under the run's synthesis (its reconstruction). Prints a markdown
table. Needs a frame-model run (features: spectrogram) and, unless --mel-only (music: PESQ, STOI and DNSMOS
are speech measures), the perceptual extra.

With --bands, a second table: the L1 distance of log magnitudes to the true ones, by frequency band (octaves from
the bottom up), of the model's and of the true magnitudes blurred by a box of B bins by B frames (--blur, each
odd size given), a reference that keeps about (bins x frames) / B^2 numbers a second of the truth.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from audiovae.dsp.distances import mel_distance
from audiovae.dsp.transforms import griffin_lim_from_log_magnitude
from audiovae.synthesis.model import load

AUDIO = {".wav", ".flac", ".ogg", ".opus", ".mp3"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run")
    parser.add_argument("heldout")
    parser.add_argument("--max-files", type=int, default=40)
    parser.add_argument("--min-seconds", type=float, default=1.0, help="Skip shorter files (PESQ needs about 1 s).")
    parser.add_argument("--mel-only", action="store_true", help="The mel distance alone (music).")
    parser.add_argument("--bands", action="store_true", help="Also the log-magnitude L1 by frequency band.")
    parser.add_argument("--blur", type=int, nargs="*", default=[3, 9], help="Box sizes of the blurred references.")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    model = load(args.run, device="cpu")
    mel = model.recipe.data.mel
    n_fft, hop, rate = mel.n_fft, mel.hop_length, model.sample_rate
    if model.recipe.data.features != "spectrogram":
        raise SystemExit(f"{args.run}: a frame model over STFT magnitudes is needed (features: spectrogram)")
    files = sorted(p for p in Path(args.heldout).rglob("*") if p.suffix.lower() in AUDIO)
    window = torch.hann_window(n_fft)
    synthesis = model.recipe.synthesis
    if not args.mel_only:
        from audiovae.evaluation.perceptual import DnsmosScorer, pesq_wb, stoi

        dnsmos = DnsmosScorer()
    rows: dict[str, list[list[float]]] = {}
    bins = n_fft // 2 + 1
    edges = [0] + [bins >> k for k in range(8, -1, -1) if bins >> k > 2]  # octaves: ..., bins / 4, bins / 2, bins
    spans = list(zip(edges[:-1], edges[1:], strict=True))
    band_l1: dict[str, list[list[float]]] = {}
    used = 0
    for path in files:
        wave = model.at_training_level(model.load_audio(path))
        frames = len(wave) // hop
        if frames * hop < args.min_seconds * rate:
            continue
        x = torch.from_numpy(wave[: frames * hop]).reshape(1, -1)
        spec = torch.stft(x, n_fft, hop, window=window, center=True, return_complex=True)  # frames + 1
        true_log = torch.log(spec.abs().clamp_min(mel.log_floor))
        features = model.representation.from_audio(x)
        posterior = model.net.encode_frames(features)
        decoded = model.net.decode_frames(posterior.mean)[..., :frames]
        # the final centred frame repeated, as synthesis does (and the frames a stride cut off, if any)
        model_log = torch.cat([decoded] + [decoded[..., -1:]] * (frames + 1 - decoded.shape[-1]), -1)
        magnitudes = {"true": true_log, "model": model_log}
        if args.bands:
            references = {"model": model_log, **{
                f"true, {b} x {b} box blur": torch.nn.functional.avg_pool2d(true_log, b, 1, b // 2,
                                                                            count_include_pad=False)
                for b in args.blur}}
            for name, log_mag in references.items():
                error = (log_mag - true_log).abs()[0]  # (bins, frames + 1)
                band_l1.setdefault(name, []).append([error[a:b].mean().item() for a, b in spans])
        run_phases = f"{synthesis.method} ({synthesis.iterations})"
        reference = wave[: frames * hop]
        for (mag_name, phase_name) in (("true", "true"), ("true", run_phases), ("model", "true"),
                                       ("model", run_phases)):
            log_mag = magnitudes[mag_name]
            if phase_name == "true":
                y = torch.istft(torch.polar(torch.exp(log_mag), spec.angle()), n_fft, hop, window=window,
                                center=True, length=frames * hop)
            else:  # the run's synthesis, on the stored frames (the last centred one dropped, as prepare stores)
                y = griffin_lim_from_log_magnitude(log_mag[..., :frames], n_fft, hop, synthesis)
            out = y[0].numpy().astype(np.float32)
            perceptual = ([np.nan] * 3 if args.mel_only else
                          [pesq_wb(reference, out, rate).value, stoi(reference, out, rate).value,
                           dnsmos(out, rate).ovrl])
            rows.setdefault(f"{mag_name} magnitudes, {phase_name} phases", []).append([
                *perceptual, mel_distance(x[:, None], y[:, None], rate).item()])
        used += 1
        if used >= args.max_files:
            break
    print(f"\n{used} files of {args.heldout}, run {args.run}: n_fft {n_fft}, hop {hop} at {rate} Hz\n")
    print("| magnitudes / phases | PESQ-WB | STOI | DNSMOS ovrl | mel distance |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, values in rows.items():
        means = [float(np.nanmean([v[i] for v in values])) for i in range(4)]
        print(f"| {name} | {means[0]:.2f} | {means[1]:.3f} | {means[2]:.2f} | {means[3]:.3f} |")
    print("\n(means over files; a file too quiet for PESQ or STOI is left out of that column)")
    if args.bands:
        hz = rate / n_fft
        print("\nL1 of log magnitudes to the true ones, by band (Hz):\n")
        print("| magnitudes | " + " | ".join(f"{a * hz:.0f}-{min(b * hz, rate / 2):.0f}" for a, b in spans)
              + " | all |")
        print("| --- |" + " ---: |" * len(edges))
        widths = np.diff(edges)
        for name, values in band_l1.items():
            means = np.mean(values, 0)
            print(f"| {name} | " + " | ".join(f"{m:.3f}" for m in means)
                  + f" | {float(np.sum(means * widths) / np.sum(widths)):.3f} |")


if __name__ == "__main__":
    main()
