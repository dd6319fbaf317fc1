"""The synthesis commands: generate, reconstruct, encode, decode and interpolate with a trained run."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from audiovae.cli.common import (
    check_seed,
    files_into_folder,
    load_model,
    model_options,
    outputs,
    plot_outputs,
)
from audiovae.errors import UserError

MAX_TEMPERATURE = 10.0  # the prior's spread scaled 10x already decodes to noise clipped at full scale
MAX_SOUNDS = 10_000  # sounds per generate call (names sample_0000 ...); more is a loop of calls
MAX_BATCH = 1024
MAX_STEPS = 1000  # interpolation steps: each is a decoded sound held in memory


def check_count(flag: str, value: int, bound: int) -> None:
    """UserError naming the flag, the value and the bound unless 1 <= value <= bound."""
    if not 1 <= value <= bound:
        raise UserError(f"{flag} must be in 1..{bound} (got {value})")


@click.command()
@click.argument("out_dir", type=click.Path(path_type=Path))
@click.option("-n", "count", type=int, default=10, show_default=True, help="Number of sounds to generate.")
@click.option("--seconds", type=float, default=None, help="Duration of each sound. Default: one training segment.")
@click.option("--temperature", type=float, default=1.0, show_default=True,
              help="Scale of the prior's standard deviation; 0 decodes the prior mean.")
@click.option("--seed", type=int, default=0, show_default=True, help="Sound i uses seed + i: same seed, same bytes.")
@click.option("--batch-size", type=int, default=8, show_default=True, help="Sounds decoded at once.")
@click.option("--prior", "prior_name", type=click.Choice(["learned", "gaussian"]), default=None,
              help="Draw latents from the run's learned prior or from N(0, I). Default: learned when the run has one.")
@click.option("--prompt", type=click.Path(path_type=Path), default=None,
              help="A sound to continue: each output starts with its reconstruction, then --seconds of new material.")
@click.option("--plot", is_flag=True, help="Also write a PNG (waveform and log-mel spectrogram) beside each WAV.")
@click.option("--label", "labels", multiple=True, metavar="NAME",
              help="A conditional run's label (repeat it to take several in turn). Default: all the run's in turn.")
@model_options
def generate(out_dir, count, seconds, temperature, seed, batch_size, prior_name, prompt, plot, labels, run,
             checkpoint, device, force) -> None:
    """Decode samples of the prior into OUT_DIR/sample_000.wav ... and OUT_DIR/samples.json.

    Sounds of any length are streamed: latents from the prior into the decoder, samples to the files.
    """
    import math

    from audiovae.io.atomic import require_free_space, write_json_atomic
    from audiovae.synthesis.generate import choose_prior, generate_files, prompt_latents

    check_count("-n", count, MAX_SOUNDS)
    check_seed(seed)
    check_count("--batch-size", batch_size, MAX_BATCH)
    if not (math.isfinite(temperature) and 0 <= temperature <= MAX_TEMPERATURE):  # NaN fails every comparison
        raise UserError(f"--temperature must be a number in 0..{MAX_TEMPERATURE:g} (got {temperature}); 1 samples "
                        "the prior as trained, beyond a few the decoder only clips")
    if seconds is not None and not (math.isfinite(seconds) and seconds > 0):
        raise UserError(f"--seconds must be a positive number of seconds (got {seconds})")
    if plot:
        from audiovae.io.plots import require_matplotlib

        require_matplotlib()
    model = load_model(run, checkpoint, device)
    in_turn = model.labels_in_turn(count, list(labels) or None)
    if labels and not model.labels:
        model.with_label(labels[0])  # the one-line refusal: an unconditional run
    bound = [model.with_label(name) for name in in_turn] if in_turn else None  # unknown labels refused here
    if in_turn and not labels:
        click.echo(f"this run is conditional: labels {', '.join(model.labels)} in turn (--label picks)", err=True)
    prior = choose_prior(bound[0] if bound else model, prior_name)
    samples = model.recipe.data.segment_samples if seconds is None else round(seconds * model.sample_rate)
    if samples < 1:
        raise UserError(f"--seconds {seconds:g} is 0 samples at {model.sample_rate} Hz; the shortest sound is "
                        f"1/{model.sample_rate} s")
    require_free_space(out_dir, count * samples * 2, f"{count} sounds of {samples / model.sample_rate:g} s")
    names = [f"sample_{i:03d}.wav" for i in range(count)]
    inputs = [model.checkpoint] + ([prompt] if prompt is not None else [])
    with outputs(out_dir, names + ["samples.json"], force, (".png",) if plot else (), inputs, whole_set=True,
                 legacy=earlier_samples) as folder:
        paths = folder.paths[:count]
        z_prompt = prompt_latents(bound[0] if bound else model, prompt) if prompt is not None else None
        if bound is None:
            written = generate_files(model, paths, seconds, temperature, seed, prior, z_prompt, batch_size,
                                     progress=count * samples > 20 * model.sample_rate)
        from tqdm import tqdm

        conditional = zip(paths, bound or [], strict=False)
        for i, (path, labelled) in enumerate(tqdm(conditional, total=len(bound or []), unit="sound", desc="generate",
                                                  disable=not bound or count * samples <= 20 * model.sample_rate,
                                                  file=sys.stderr)):  # sound i: seed + i, under its label
            written = generate_files(labelled, [path], seconds, temperature, seed + i,
                                     choose_prior(labelled, prior_name), z_prompt, 1)
        write_json_atomic(folder.paths[-1], {
            "checkpoint": str(model.checkpoint), "checkpoint_sha256": model.checkpoint_sha256,
            "sample_rate": model.sample_rate, "prior": prior.name, "temperature": temperature,
            "prompt": str(prompt) if prompt is not None else None, "seconds": written / model.sample_rate,
            "files": [{"file": p.name, "seed": seed + i, **({"label": in_turn[i]} if in_turn else {})}
                      for i, p in enumerate(paths)],
        })
        if plot:
            plot_outputs([(path, model.load_audio(path)) for path in paths], model.sample_rate)
        folder.commit()
    click.echo(f"wrote {count} sounds of {written / model.sample_rate:.2f} s to {out_dir} "
               f"(from {model.checkpoint}, {prior.name} prior)")


def earlier_samples(folder: Path) -> list[str]:
    """What a generate from before output markers wrote into `folder`: samples.json and the files it lists."""
    import json

    try:
        files = json.loads((folder / "samples.json").read_text(encoding="utf-8"))["files"]
        return ["samples.json"] + [str(entry["file"]) for entry in files]
    except (OSError, ValueError, KeyError, TypeError):
        return []


@click.command()
@files_into_folder("inputs")
@click.option("--plot", is_flag=True, help="Also write a PNG per file: input above output.")
@click.option("--label", default=None, metavar="NAME", help="A conditional run's label to decode under.")
@click.option("--from-label", default=None, metavar="NAME",
              help="The label to encode under (the inputs' own: label transfer). Default: --label.")
@model_options
def reconstruct(inputs, out_dir, plot, label, from_label, run, checkpoint, device, force) -> None:
    """Encode and decode whole files of any length (resampled to the model's rate) into OUT_DIR.

    With a model trained on other sounds, this is timbre transfer; with a conditional run, --from-label kick
    --label snare decodes a kick's latents as a snare (label transfer).
    """
    if plot:
        from audiovae.io.plots import require_matplotlib

        require_matplotlib()
    loaded = load_model(run, checkpoint, device)
    model = loaded.with_label(label or from_label)
    encoder = loaded.with_label(from_label or label)
    folder = outputs(out_dir, [f"{Path(p).stem}.wav" for p in inputs], force, (".png",) if plot else (),
                     [*inputs, model.checkpoint])
    done, failed = [], []
    with folder:
        for source, path in zip(inputs, folder.paths, strict=True):
            try:
                done.append((source, model.reconstruct_file(source, path, encoder=encoder)))
            except UserError as error:  # one bad file does not stop the others
                if len(inputs) == 1:
                    raise
                failed.append(str(error))
                click.echo(f"warning: skipped {error}", err=True)
        if plot and done:
            plot_outputs([(path, model.load_audio(path)) for _, path in done], model.sample_rate,
                         [model.load_audio(source) for source, _ in done])
        folder.commit()
    click.echo(f"wrote {len(done)} reconstructions to {out_dir}")
    if failed:
        raise UserError(f"{len(failed)} of {len(inputs)} inputs could not be reconstructed (reasons above)")


@click.command()
@files_into_folder("inputs")
@click.option("--label", default=None, metavar="NAME", help="A conditional run's label to encode under.")
@model_options
def encode(inputs, out_dir, label, run, checkpoint, device, force) -> None:
    """Encode files to latent sequences: OUT_DIR/NAME.npy (latent_size, frames) and NAME.json."""
    from audiovae.synthesis.latent_files import save_latents

    model = load_model(run, checkpoint, device).with_label(label)
    with outputs(out_dir, [f"{Path(p).stem}.npy" for p in inputs], force, (".json",),
                 [*inputs, model.checkpoint]) as folder:
        paths = folder.paths
        for source, path in zip(inputs, paths, strict=True):
            save_latents(path, model.encode(model.load_audio(source)), model, source)
        folder.commit()
    click.echo(f"wrote {len(paths)} latent files to {out_dir}; {model.sample_rate} samples/s become "
               f"{model.latent_size * model.sample_rate / model.frame_samples:.1f} latent values/s "
               f"(compression {model.compression_ratio():.1f}x)")


@click.command()
@files_into_folder("latents")
@click.option("--label", default=None, metavar="NAME", help="A conditional run's label to decode under.")
@model_options
def decode(latents, out_dir, label, run, checkpoint, device, force) -> None:
    """Decode latent files written by `audiovae encode` back to WAV files in OUT_DIR."""
    from audiovae.io.audio import write_wav
    from audiovae.synthesis.latent_files import load_latents

    model = load_model(run, checkpoint, device).with_label(label)
    headers = [Path(p).with_suffix(".json") for p in latents]
    with outputs(out_dir, [f"{Path(p).stem}.wav" for p in latents], force, (),
                 [*latents, *headers, model.checkpoint]) as folder:
        paths = folder.paths
        for source, path in zip(latents, paths, strict=True):
            write_wav(path, model.decode(load_latents(source, model)), model.sample_rate)
        folder.commit()
    click.echo(f"wrote {len(paths)} sounds to {out_dir}")


@click.command()
@click.argument("first", type=click.Path(path_type=Path))
@click.argument("second", type=click.Path(path_type=Path))
@click.argument("out_dir", type=click.Path(path_type=Path))
@click.option("--steps", type=int, default=8, show_default=True, help="Number of sounds, endpoints included (>= 2).")
@click.option("--method", type=click.Choice(["slerp", "linear"]), default="slerp", show_default=True,
              help="Spherical or linear interpolation of the latent sequences.")
@click.option("--label", default=None, metavar="NAME", help="A conditional run's label.")
@model_options
def interpolate(first, second, out_dir, steps, method, label, run, checkpoint, device, force) -> None:
    """Move from FIRST's latents to SECOND's in STEPS sounds: OUT_DIR/interp_000.wav ..."""
    from audiovae.io.audio import write_wav

    if not 2 <= steps <= MAX_STEPS:
        raise UserError(f"--steps must be in 2..{MAX_STEPS} (got {steps})")
    names = [f"interp_{i:03d}.wav" for i in range(steps)]
    with outputs(out_dir, names, force, (), [first, second, *([checkpoint] if checkpoint else [])],
                 whole_set=True) as folder:  # before any work
        model = load_model(run, checkpoint, device).with_label(label)
        a, b = model.load_audio(first), model.load_audio(second)
        if len(a) != len(b):  # the model crops the longer: say so, as a shorter output is not what was asked
            shorter = min(len(a), len(b))
            click.echo(f"warning: {first} is {len(a)} samples and {second} {len(b)} at {model.sample_rate} Hz; "
                       f"both are cut to the shorter ({shorter} samples, {shorter / model.sample_rate:.2f} s)",
                       err=True)
        waves = model.interpolate(a, b, steps, method)
        for path, wave in zip(folder.paths, waves, strict=True):
            write_wav(path, wave, model.sample_rate)
        folder.commit()
    click.echo(f"wrote {steps} sounds to {out_dir}")
