"""The `audiovae` command: parse options, call one library function, print what was written."""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path

import click

from audiovae.cli.common import Group, check_seed, print_next
from audiovae.cli.realtime import export, stream
from audiovae.cli.report import report
from audiovae.cli.score import score
from audiovae.cli.synthesis import decode, encode, generate, interpolate, reconstruct
from audiovae.compute.allocator import keep_freed_memory
from audiovae.data.representations import REPRESENTATIONS
from audiovae.errors import UserError
from audiovae.io.run_folder import DEFAULT_RUNS_ROOT
from audiovae.version import __version__

MAX_WORKERS = 512  # prepare's worker processes


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="audiovae")
def main() -> None:
    """Learn generative models of sound: prepare -> train -> generate."""
    keep_freed_memory()  # every command reuses its freed tensors' memory (audiovae/compute/allocator.py)


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
@click.option("--labels", default=None, metavar="folders|FILE.csv",
              help="Label each file, for conditional models: 'folders' (DIR/kick/a.wav -> kick) or a CSV of "
                   "path,label. The split is then stratified by label.")
@click.option("--workers", type=int, default=None, help="Worker processes. Default: all cores.")
@click.option("--force", is_flag=True, help="Replace an existing output folder.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def prepare(inputs, output, recipe, labels, workers, force, quiet, **flags) -> None:
    """Turn folders of recordings (WAV, FLAC, OGG, AIFF, MP3) into a training set.

    Files are found recursively, mixed to mono, resampled, normalized per file and cut into segments;
    silent segments are dropped and unusable files are skipped with a warning. Source files are split
    into train and valid by file. The input folders are never modified.
    """
    import dataclasses

    from audiovae.config.data import DataConfig
    from audiovae.config.recipe import load_recipe
    from audiovae.config.schema import ConfigError, build_dataclass, to_plain
    from audiovae.data.prepare import prepare as run_prepare

    if workers is not None and not 1 <= workers <= MAX_WORKERS:
        raise UserError(f"--workers must be in 1..{MAX_WORKERS} (got {workers}); leave it out to use every core")
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
    result = run_prepare(list(inputs), output, data, workers=workers, force=force, progress=not quiet, labels=labels)
    totals = result.segments
    click.echo(f"wrote {result.output}: {result.files} files ({result.hours:.3f} h), "
               f"{totals['train']} train / {totals['valid']} valid segments, {result.skipped} skipped")
    if result.labels is not None:
        from audiovae.data.labels import describe_counts

        click.echo(f"{len(result.labels)} labels:")
        for line in describe_counts(result.labels):
            click.echo(line, err=line.startswith("warning"))
    if recipe is None:  # any recipe whose data: settings match these trains on it
        print_next(["audiovae", "train", "RECIPE.yaml", "--set", f"data.folder={result.output}"])
    elif Path(result.output).resolve() != Path(data.folder).resolve():
        print_next(["audiovae", "train", recipe, "--set", f"data.folder={result.output}"])
    else:
        print_next(["audiovae", "train", recipe])



@main.command()
@click.argument("recipe", type=click.Path(path_type=Path))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a recipe value, e.g. --set train.max_steps=200 (checked like the file).")
@click.option("--resume", is_flag=True, help="Continue the most recent run of this recipe from its last checkpoint.")
@click.option("--run-dir", type=click.Path(path_type=Path), default=None,
              help="Run folder to write (or, with --resume, to continue). Default: runs/<recipe-name>[-N].")
@click.option("--runs-root", type=click.Path(path_type=Path), default=DEFAULT_RUNS_ROOT, show_default=True,
              help="Folder holding the run folders.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def train(recipe, overrides, resume, run_dir, runs_root, quiet) -> None:
    """Train the VAE a recipe describes on the data folder it names.

    CUDA (with bf16 autocast) when present, CPU otherwise. Ctrl-C saves a checkpoint; --resume goes on
    exactly where it stopped. Under `torchrun --nproc_per_node=N` it trains data-parallel.
    """
    from audiovae.training.vae_stage import train as run_train

    result = run_train(recipe, overrides=tuple(overrides), run_dir=run_dir, resume=resume, runs_root=runs_root,
                       progress=not quiet)
    if os.environ.get("RANK", "0") == "0":
        best = f", best validation score {result.best_score:.4f}" if result.best_score is not None else ""
        click.echo(f"{result.stopped} at step {result.step}{best}: {result.run_dir}")
        if result.stopped == "interrupted":
            again = [word for override in overrides for word in ("--set", override)]
            print_next(["audiovae", "train", recipe, *again, "--resume", "--run-dir", result.run_dir])
        else:
            print_next(["audiovae", "generate", "-n", "10", "out/", "--run", result.run_dir],
                       ["audiovae", "report", "--run", result.run_dir])
    elif int(os.environ.get("WORLD_SIZE", "1")) > 1:  # a torchrun rank but the first: it owns no file, so it leaves
        # without the interpreter's teardown, where gloo's threads once aborted a rank after a finished run although
        # its group was destroyed (pytorch#190489)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


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
    from audiovae.config.recipe import apply_overrides
    from audiovae.config.schema import ConfigError, build_dataclass
    from audiovae.priors.learned import PriorConfig
    from audiovae.synthesis.model import load
    from audiovae.training.prior_stage import train_prior as run_prior

    model = load(run, device="cpu")  # the prior is small: the CPU does it well
    config = None
    if overrides:
        base = dataclasses.asdict(model.recipe.prior or PriorConfig())
        try:
            raw = apply_overrides({"prior": base}, overrides)
            if set(raw) != {"prior"}:
                raise ConfigError(next(iter(set(raw) - {"prior"})), "train-prior takes prior.* settings only")
            config = build_dataclass(PriorConfig, raw["prior"], "prior")
        except ConfigError as error:
            raise UserError(f"--set {error.key}: {error.message}") from None
    result = run_prior(model.run, model.net, model.recipe, model.checkpoint_sha256, config, resume=resume,
                       progress=not quiet, vae_weights_sha256=model.weights_sha256)
    best = f"{result.best_nll:.2f}" if result.best_nll is not None else "-"
    click.echo(f"prior {result.stopped} at step {result.step}: held-out NLL {best} nats per frame "
               f"(N(0, I): {result.gaussian_nll:.2f}): {result.folder}")


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
    from audiovae.evaluation.evaluate import evaluate as run_evaluate

    check_seed(seed)
    result = run_evaluate(run, data, split, max_files, seed, device, progress=not quiet,
                          perceptual_metrics=perceptual)
    click.echo(result.table)
    click.echo(f"\nwrote {result.json_path} and {result.csv_path}")




for command in (generate, reconstruct, encode, decode, interpolate, export, stream, report, score):
    main.add_command(command)
