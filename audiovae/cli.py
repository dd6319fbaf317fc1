"""The `audiovae` command: parse options, call one library function, print what was written."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from audiovae import __version__
from audiovae.errors import UserError


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
@click.option("--features", type=click.Choice(["wave", "mel"]), default=None,
              help="wave: normalized waveform segments; mel: log-mel frames. Default: wave.")
@click.option("--sample-rate", type=int, default=None, help="Target sample rate in Hz. Default: 16000.")
@click.option("--segment-samples", type=int, default=None, help="Segment length in samples. Default: 16384.")
@click.option("--hop-samples", type=int, default=None,
              help="Samples between segment starts (less than the segment length overlaps). Default: no overlap.")
@click.option("--normalize", "normalization", type=click.Choice(["peak", "rms", "none"]), default=None,
              help="Per-file loudness normalization. Default: peak.")
@click.option("--target-db", type=float, default=None,
              help="Peak or RMS level after normalization, dBFS. Default: -1 (peak).")
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

