"""The `audiovae report` command: a run's listening page."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.option("--run", type=click.Path(path_type=Path), default=None,
              help="Run folder to report on. Default: the most recent run under runs/.")
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
              help="Folder to write (index.html with its WAVs and PNGs). Default: RUN/report.")
@click.option("--compare", type=click.Path(path_type=Path), default=None,
              help="A second run, shown in a second column for the same files, seeds and prompt.")
@click.option("--files", type=click.IntRange(min=1), default=3, show_default=True,
              help="Held-out files to show (the first of the dataset's valid split).")
@click.option("--samples", type=click.IntRange(min=0), default=4, show_default=True,
              help="Prior samples to show (the run's learned prior when it has one).")
@click.option("--seconds", type=click.FloatRange(min=0, min_open=True), default=4.0, show_default=True,
              help="Length of each prior sample and prompt continuation.")
@click.option("--prompt", type=click.Path(path_type=Path), default=None,
              help="A sound to continue: the page shows two continuations of it per run.")
@click.option("--seed", type=int, default=0, show_default=True, help="Sample i uses seed + i.")
@click.option("--data", type=click.Path(path_type=Path), default=None,
              help="Prepared dataset whose held-out files to use. Default: the recipe's data folder.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="Where to run the models.")
@click.option("--force", is_flag=True, help="Replace an existing report folder.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def report(run, output, compare, files, samples, seconds, prompt, seed, data, device, force, quiet) -> None:
    """Write a listening page for RUN: held-out inputs beside their reconstructions, prior samples, the
    `audiovae evaluate` table and the training curves, as one folder with index.html (no network needed).
    """
    from audiovae.evaluation.report import counted
    from audiovae.evaluation.report import report as write_report

    result = write_report(run, output, force, compare, files, samples, seconds, prompt, seed, data, device,
                          progress=not quiet)
    compared = f", beside {result.runs[1]}" if len(result.runs) > 1 else ""
    continued = f", {counted(result.continuations, 'prompt continuation')}" if result.continuations else ""
    click.echo(f"wrote {result.page}: {counted(result.files, 'held-out file')}, "
               f"{counted(result.samples, 'prior sample')}{continued} "
               f"of {result.runs[0]}{compared}")
