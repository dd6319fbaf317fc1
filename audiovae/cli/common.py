"""What every command shares: the one exit path for user errors, the model options, output paths and plots."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click

from audiovae.errors import UserError
from audiovae.io.outputs import OutputFolder


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


SEED_BOUND = 2**62  # seeds are torch's signed 64-bit integers; sound i uses seed + i


def check_seed(seed: int) -> None:
    """UserError naming the value and the bound for a --seed beyond what torch's generators take."""
    if not -SEED_BOUND <= seed <= SEED_BOUND:
        raise UserError(f"--seed must be in -{SEED_BOUND}..{SEED_BOUND} (got {seed})")


def load_model(run, checkpoint, device):
    from audiovae.synthesis.model import load

    if run is not None and checkpoint is not None:
        raise UserError("--run and --checkpoint both name a model; pass one of them")
    return load(checkpoint or run, device=device)


def command_name() -> str:
    """The running command's name (what the output marker records), or 'audiovae' outside a command."""
    context = click.get_current_context(silent=True)
    return context.info_name if context is not None and context.info_name else "audiovae"


def outputs(out_dir: Path, names: list[str], force: bool, companions: tuple[str, ...] = (), inputs=(),
            whole_set: bool = False, legacy=None) -> OutputFolder:
    """The files `names` a command writes into out_dir (audiovae.io.outputs.OutputFolder): checked now, written
    into its `.paths`, claimed by `.commit()`. inputs: every file the command reads, never written over."""
    return OutputFolder(out_dir, command_name(), names, force, inputs, companions, whole_set, legacy)


def plot_outputs(paths_and_waves, sample_rate: int, inputs=None) -> list[Path]:
    from audiovae.io.plots import plot_waves

    written = []
    for i, (path, wave) in enumerate(paths_and_waves):
        reference = inputs[i] if inputs is not None else None
        written.append(plot_waves(path.with_suffix(".png"), wave, sample_rate, reference))
    return written
