"""What every command shares: the one exit path for user errors, the model options, output paths and plots."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click

from audiovae.errors import UserError


def fatal(message: str) -> None:
    """The one exit path for user errors: a single line on stderr, exit code 1."""
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


class Group(click.Group):
    """Turns UserError from any command into one line and exit code 1."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except UserError as error:
            fatal(str(error))
        except KeyboardInterrupt:
            fatal("interrupted")


def print_next(*commands: list[str | Path]) -> None:
    """Tell the user what to run next: one `next: audiovae ...` line per command, on stdout after the
    result line, with paths quoted so the line can be pasted into a shell."""
    for words in commands:
        click.echo("next: " + " ".join(shlex.quote(str(word)) for word in words))


MODEL_OPTIONS = [
    click.option("--run", "run", type=click.Path(path_type=Path), default=None,
                 help="Run folder to use (its best checkpoint). Default: the most recent run under runs/."),
    click.option("--checkpoint", type=click.Path(path_type=Path), default=None, help="A checkpoint file to use."),
    click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
                 help="Where to run the model."),
    click.option("--force", is_flag=True, help="Overwrite existing output files."),
]


def model_options(function):
    for option in reversed(MODEL_OPTIONS):
        function = option(function)
    return function


def files_into_folder(name: str):
    """The arguments NAME... OUT_DIR of a command that turns each of several files into one in a folder."""
    inputs = click.argument(name, nargs=-1, required=True, type=click.Path(path_type=Path))
    out_dir = click.argument("out_dir", type=click.Path(path_type=Path))
    return lambda function: inputs(out_dir(function))


def load_model(run, checkpoint, device):
    from audiovae.synthesis.model import load

    if run is not None and checkpoint is not None:
        raise UserError("--run and --checkpoint both name a model; pass one of them")
    return load(checkpoint or run, device=device)


def output_paths(out_dir: Path, names: list[str], force: bool, companions: tuple[str, ...] = ()) -> list[Path]:
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


def plot_outputs(paths_and_waves, sample_rate: int, inputs=None) -> list[Path]:
    from audiovae.io.plots import plot_waves

    written = []
    for i, (path, wave) in enumerate(paths_and_waves):
        reference = inputs[i] if inputs is not None else None
        written.append(plot_waves(path.with_suffix(".png"), wave, sample_rate, reference))
    return written
