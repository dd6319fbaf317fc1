"""The `audiovae` command: parse options, call one library function, print what was written."""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path

import click

from audiovae import __version__
from audiovae.errors import UserError
from audiovae.representation import REPRESENTATIONS


def fatal(message: str) -> None:
    """The one exit path for user errors: a single line on stderr, exit code 1."""
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


class _Group(click.Group):
    """Turns UserError from any command into one line and exit code 1."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except UserError as error:
            fatal(str(error))
        except KeyboardInterrupt:
            fatal("interrupted")


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="audiovae")
def main() -> None:
    """Learn generative models of sound: prepare -> train -> generate."""


@main.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
              help="Dataset folder to write. Default: the recipe's data.folder, else data/prepared.")
@click.option("--recipe", type=click.Path(path_type=Path), default=None,
              help="Take the audio settings (sample rate, segments, features, mel) from this recipe.")
@click.option("--features", type=click.Choice(list(REPRESENTATIONS)), default=None,
              help="wave: normalized waveform segments; mel: log-mel frames; spectrogram: log-STFT frames. Default: wave.")
@click.option("--sample-rate", type=int, default=None, help="Target sample rate in Hz. Default: 16000.")
@click.option("--segment-samples", type=int, default=None, help="Segment length in samples. Default: 16384.")
@click.option("--hop-samples", type=int, default=None,
              help="Samples between segment starts (less than the segment length overlaps). Default: no overlap.")
@click.option("--normalize", "normalization", type=click.Choice(["peak", "rms", "none"]), default=None,
              help="Per-file loudness normalization. Default: peak.")
@click.option("--target-db", type=float, default=None,
              help="Peak or RMS level after normalization, dBFS. Default: -1 for peak, -20 for rms.")
@click.option("--silence-db", type=float, default=None,
              help="Drop segments whose RMS is below this level, dBFS. Default: -60.")
@click.option("--valid-fraction", type=float, default=None,
              help="Share of source files held out for validation. Default: 0.1.")
@click.option("--seed", "split_seed", type=int, default=None, help="Seed of the train/valid split. Default: 0.")
@click.option("--workers", type=int, default=None, help="Worker processes. Default: all cores.")
@click.option("--force", is_flag=True, help="Replace an existing output folder.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def prepare(inputs, output, recipe, workers, force, quiet, **flags) -> None:
    """Turn folders of recordings (WAV, FLAC, OGG, AIFF, MP3) into a training set.

    Files are found recursively, mixed to mono, resampled, normalized per file and cut into segments;
    silent segments are dropped and unusable files are skipped with a warning. Source files are split
    into train and valid by file. The input folders are never modified.
    """
    import dataclasses

    from audiovae.config import ConfigError, DataConfig, build_dataclass, load_recipe, to_plain
    from audiovae.prepare import prepare as run_prepare

    given = {key: value for key, value in flags.items() if value is not None}
    if recipe is not None:
        recipe_data = load_recipe(recipe).data
        clash = [k for k in ("features", "sample_rate", "segment_samples") if k in given
                 and given[k] != getattr(recipe_data, k)]
        if clash:
            raise UserError(f"--{clash[0].replace('_', '-')} disagrees with {recipe} (data.{clash[0]}="
                            f"{getattr(recipe_data, clash[0])}); edit the recipe or drop the flag")
        base = to_plain(dataclasses.asdict(recipe_data))
    else:
        base = {}
    try:
        data = build_dataclass(DataConfig, {**base, **given}, "")
    except ConfigError as error:
        raise UserError(f"--{error.key.replace('_', '-')}: {error.message}") from None
    output = output or Path(data.folder)
    result = run_prepare(list(inputs), output, data, workers=workers, force=force, progress=not quiet)
    totals = result.segments
    click.echo(f"wrote {result.output}: {result.files} files ({result.hours:.3f} h), "
               f"{totals['train']} train / {totals['valid']} valid segments, {result.skipped} skipped")



@main.command()
@click.argument("recipe", type=click.Path(path_type=Path))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a recipe value, e.g. --set train.max_steps=200 (checked like the file).")
@click.option("--resume", is_flag=True, help="Continue the most recent run of this recipe from its last checkpoint.")
@click.option("--run-dir", type=click.Path(path_type=Path), default=None,
              help="Run folder to write (or, with --resume, to continue). Default: runs/<recipe-name>[-N].")
@click.option("--runs-root", type=click.Path(path_type=Path), default=Path("runs"), show_default=True,
              help="Folder holding the run folders.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def train(recipe, overrides, resume, run_dir, runs_root, quiet) -> None:
    """Train the VAE a recipe describes on the data folder it names.

    CUDA (with bf16 autocast) when present, CPU otherwise. Ctrl-C saves a checkpoint; --resume goes on
    exactly where it stopped. Under `torchrun --nproc_per_node=N` it trains data-parallel.
    """
    from audiovae.train import train as run_train

    result = run_train(recipe, overrides=tuple(overrides), run_dir=run_dir, resume=resume, runs_root=runs_root,
                       progress=not quiet)
    if os.environ.get("RANK", "0") == "0":
        best = f", best validation score {result.best_score:.4f}" if result.best_score is not None else ""
        click.echo(f"{result.stopped} at step {result.step}{best}: {result.run_dir}")


@main.command("train-prior")
@click.argument("run", required=False, type=click.Path(path_type=Path))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a prior setting, e.g. --set prior.max_minutes=2 (checked like the recipe).")
@click.option("--resume", is_flag=True, help="Continue the run's prior from its last checkpoint.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def train_prior(run, overrides, resume, quiet) -> None:
    """(Re)train RUN's learned prior over its latent sequences (default: the most recent run).

    Uses the recipe's prior: section (or defaults) on the frozen VAE's latents of the train split; writes
    RUN/prior/best.pt and last.pt, which generate uses from then on.
    """
    from audiovae.config import apply_overrides
    from audiovae.learned_prior import PriorConfig
    from audiovae.prior_stage import train_prior as run_prior
    from audiovae.schema import ConfigError, build_dataclass
    from audiovae.synth import load

    config = None
    if overrides:
        base = dataclasses.asdict(load(run).recipe.prior or PriorConfig())
        try:
            raw = apply_overrides({"prior": base}, overrides)
            if set(raw) != {"prior"}:
                raise ConfigError(next(iter(set(raw) - {"prior"})), "train-prior takes prior.* settings only")
            config = build_dataclass(PriorConfig, raw["prior"], "prior")
        except ConfigError as error:
            raise UserError(f"--set {error.key}: {error.message}") from None
    result = run_prior(run, config, resume=resume, progress=not quiet)
    best = f"{result.best_nll:.2f}" if result.best_nll is not None else "-"
    click.echo(f"prior {result.stopped} at step {result.step}: held-out NLL {best} nats per frame "
               f"(N(0, I): {result.gaussian_nll:.2f}): {result.folder}")


# ---- synthesis ---------------------------------------------------------------------------------------------

_model_options = [
    click.option("--run", "run", type=click.Path(path_type=Path), default=None,
                 help="Run folder to use (its best checkpoint). Default: the most recent run under runs/."),
    click.option("--checkpoint", type=click.Path(path_type=Path), default=None, help="A checkpoint file to use."),
    click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
                 help="Where to run the model."),
    click.option("--force", is_flag=True, help="Overwrite existing output files."),
]


def model_options(function):
    for option in reversed(_model_options):
        function = option(function)
    return function


def _load(run, checkpoint, device):
    from audiovae.synth import load

    if run is not None and checkpoint is not None:
        raise UserError("--run and --checkpoint both name a model; pass one of them")
    return load(checkpoint or run, device=device)


def _outputs(out_dir: Path, names: list[str], force: bool, companions: tuple[str, ...] = ()) -> list[Path]:
    """The output paths for `names` in out_dir, refusing clashes and (without --force) existing files.

    companions: suffixes of files written beside each output (e.g. '.json', '.png'), checked too.
    """
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"{out_dir}: exists and is not a folder (the last argument is the output folder)")
    paths = [out_dir / name for name in names]
    seen: dict[Path, int] = {}
    for i, path in enumerate(paths):
        if path in seen:
            raise UserError(f"inputs {seen[path] + 1} and {i + 1} would both be written to {path}; "
                            "rename one or reconstruct them into different folders")
        seen[path] = i
    everything = paths + [p.with_suffix(suffix) for p in paths for suffix in companions]
    taken = [p for p in everything if p.exists()]
    if taken and not force:
        raise UserError(f"{taken[0]}: already exists ({len(taken)} of the outputs do); pass --force to overwrite")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"{out_dir}: cannot create the output folder ({error.strerror})") from None
    return paths


def _plot(paths_and_waves, sample_rate: int, inputs=None) -> list[Path]:
    from audiovae.plot import plot_waves

    written = []
    for i, (path, wave) in enumerate(paths_and_waves):
        reference = inputs[i] if inputs is not None else None
        written.append(plot_waves(path.with_suffix(".png"), wave, sample_rate, reference))
    return written


@main.command()
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
@model_options
def generate(out_dir, count, seconds, temperature, seed, batch_size, prior_name, prompt, plot, run, checkpoint,
             device, force) -> None:
    """Decode samples of the prior into OUT_DIR/sample_000.wav ... and OUT_DIR/samples.json.

    Sounds of any length are streamed: latents from the prior into the decoder, samples to the files.
    """
    import math

    from audiovae.fileio import require_free_space, write_json_atomic
    from audiovae.generation import choose_prior, generate_files, prompt_latents

    if count < 1 or batch_size < 1:
        raise UserError("-n and --batch-size must be positive")
    if temperature < 0:
        raise UserError("--temperature must be >= 0")
    if seconds is not None and not (math.isfinite(seconds) and seconds > 0):
        raise UserError(f"--seconds must be a positive number of seconds (got {seconds})")
    if plot:
        from audiovae.plot import require_matplotlib

        require_matplotlib()
    model = _load(run, checkpoint, device)
    prior = choose_prior(model, prior_name)
    samples = model.recipe.data.segment_samples if seconds is None else round(seconds * model.sample_rate)
    require_free_space(out_dir, count * samples * 2, f"{count} sounds of {samples / model.sample_rate:g} s")
    paths = _outputs(out_dir, [f"sample_{i:03d}.wav" for i in range(count)], force, (".png",) if plot else ())
    if (out_dir / "samples.json").exists() and not force:
        raise UserError(f"{out_dir / 'samples.json'}: already exists; pass --force to overwrite")
    z_prompt = prompt_latents(model, prompt) if prompt is not None else None
    written = generate_files(model, paths, seconds, temperature, seed, prior, z_prompt, batch_size,
                             progress=count * samples > 20 * model.sample_rate)
    write_json_atomic(out_dir / "samples.json", {
        "checkpoint": str(model.checkpoint), "checkpoint_sha256": model.checkpoint_sha256,
        "sample_rate": model.sample_rate, "prior": prior.name, "temperature": temperature,
        "prompt": str(prompt) if prompt is not None else None, "seconds": written / model.sample_rate,
        "files": [{"file": p.name, "seed": seed + i} for i, p in enumerate(paths)],
    })
    if plot:
        _plot([(path, model.load_audio(path)) for path in paths], model.sample_rate)
    click.echo(f"wrote {count} sounds of {written / model.sample_rate:.2f} s to {out_dir} "
               f"(from {model.checkpoint}, {prior.name} prior)")


@main.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.argument("out_dir", type=click.Path(path_type=Path))
@click.option("--plot", is_flag=True, help="Also write a PNG per file: input above output.")
@model_options
def reconstruct(inputs, out_dir, plot, run, checkpoint, device, force) -> None:
    """Encode and decode whole files of any length (resampled to the model's rate) into OUT_DIR.

    With a model trained on other sounds, this is timbre transfer.
    """
    if plot:
        from audiovae.plot import require_matplotlib

        require_matplotlib()
    model = _load(run, checkpoint, device)
    paths = _outputs(out_dir, [f"{Path(p).stem}.wav" for p in inputs], force, (".png",) if plot else ())
    done, failed = [], []
    for source, path in zip(inputs, paths, strict=True):
        try:
            done.append((source, model.reconstruct_file(source, path)))
        except UserError as error:  # one bad file does not stop the others
            if len(inputs) == 1:
                raise
            failed.append(str(error))
            click.echo(f"warning: skipped {error}", err=True)
    if plot and done:
        _plot([(path, model.load_audio(path)) for _, path in done], model.sample_rate,
              [model.load_audio(source) for source, _ in done])
    click.echo(f"wrote {len(done)} reconstructions to {out_dir}")
    if failed:
        raise UserError(f"{len(failed)} of {len(inputs)} inputs could not be reconstructed (reasons above)")


@main.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.argument("out_dir", type=click.Path(path_type=Path))
@model_options
def encode(inputs, out_dir, run, checkpoint, device, force) -> None:
    """Encode files to latent sequences: OUT_DIR/NAME.npy (latent_size, frames) and NAME.json."""
    from audiovae.latents import save_latents

    model = _load(run, checkpoint, device)
    paths = _outputs(out_dir, [f"{Path(p).stem}.npy" for p in inputs], force, (".json",))
    for source, path in zip(inputs, paths, strict=True):
        save_latents(path, model.encode(model.load_audio(source)), model, source)
    click.echo(f"wrote {len(paths)} latent files to {out_dir}; {model.sample_rate} samples/s become "
               f"{model.latent_size * model.sample_rate / model.frame_samples:.1f} latent values/s "
               f"(compression {model.compression_ratio():.1f}x)")


@main.command()
@click.argument("latents", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.argument("out_dir", type=click.Path(path_type=Path))
@model_options
def decode(latents, out_dir, run, checkpoint, device, force) -> None:
    """Decode latent files written by `audiovae encode` back to WAV files in OUT_DIR."""
    from audiovae.audio import write_wav
    from audiovae.latents import load_latents

    model = _load(run, checkpoint, device)
    paths = _outputs(out_dir, [f"{Path(p).stem}.wav" for p in latents], force)
    for source, path in zip(latents, paths, strict=True):
        write_wav(path, model.decode(load_latents(source, model)), model.sample_rate)
    click.echo(f"wrote {len(paths)} sounds to {out_dir}")


@main.command()
@click.argument("first", type=click.Path(path_type=Path))
@click.argument("second", type=click.Path(path_type=Path))
@click.argument("out_dir", type=click.Path(path_type=Path))
@click.option("--steps", type=int, default=8, show_default=True, help="Number of sounds, endpoints included (>= 2).")
@click.option("--method", type=click.Choice(["slerp", "linear"]), default="slerp", show_default=True,
              help="Spherical or linear interpolation of the latent sequences.")
@model_options
def interpolate(first, second, out_dir, steps, method, run, checkpoint, device, force) -> None:
    """Move from FIRST's latents to SECOND's in STEPS sounds: OUT_DIR/interp_000.wav ..."""
    from audiovae.audio import write_wav

    if steps < 2:
        raise UserError("--steps must be at least 2")
    paths = _outputs(out_dir, [f"interp_{i:03d}.wav" for i in range(steps)], force)  # before any work
    model = _load(run, checkpoint, device)
    waves = model.interpolate(model.load_audio(first), model.load_audio(second), steps, method)
    for path, wave in zip(paths, waves, strict=True):
        write_wav(path, wave, model.sample_rate)
    click.echo(f"wrote {len(paths)} sounds to {out_dir}")


@main.command()
@click.argument("run", required=False, type=click.Path(path_type=Path))
@click.option("--data", type=click.Path(path_type=Path), default=None,
              help="Prepared dataset to evaluate on. Default: the recipe's data folder.")
@click.option("--split", type=click.Choice(["valid", "train"]), default="valid", show_default=True,
              help="Which files of the dataset.")
@click.option("--max-files", type=click.IntRange(min=1), default=None,
              help="Evaluate on at most this many files (a quick look).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the prior samples.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--perceptual/--no-perceptual", default=None,
              help="DNSMOS, PESQ-WB and STOI (the `metrics` extra). Default: when installed; --perceptual "
                   "fails if it is not, --no-perceptual skips them (faster).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def evaluate(run, data, split, max_files, seed, device, perceptual, quiet) -> None:
    """Measure RUN (default: the most recent run): reconstruction, perceptual quality, frame-rate comb,
    latent health, generation, speed.

    Writes RUN/eval/metrics.json and metrics.csv and prints a table.
    """
    from audiovae.evaluate import evaluate as run_evaluate

    result = run_evaluate(run, data, split, max_files, seed, device, progress=not quiet,
                          perceptual_metrics=perceptual)
    click.echo(result.table)
    click.echo(f"\nwrote {result.json_path} and {result.csv_path}")


from audiovae.cli_realtime import export, stream  # noqa: E402 - they use the helpers above

main.add_command(export)
main.add_command(stream)
