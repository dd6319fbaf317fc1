"""`audiovae score`: anomaly scores of files under a model of normal sounds, or how well they separate two folders."""

from __future__ import annotations

from pathlib import Path

import click

from audiovae.cli.common import load_model, model_options, outputs
from audiovae.errors import UserError
from audiovae.evaluation.anomaly import (
    ANOMALOUS_EXIT_CODE,
    DEFAULT_MEASURE,
    MAX_FALSE_POSITIVE_RATE,
    MEASURE_LABELS,
    MEASURES,
    THRESHOLD_PERCENTILE,
)
from audiovae.io.atomic import write_csv_atomic


def _audio_files(inputs: list[Path], what: str) -> list[Path]:
    """The audio files of files and folders (searched recursively), in a fixed order; UserError when none."""
    from audiovae.data.prepare import find_audio

    missing = [path for path in inputs if not path.exists()]
    if missing:
        raise UserError(f"{missing[0]}: no such file or folder")
    found = [source.path for source in find_audio(inputs)]
    if not found:
        raise UserError(f"{what}: no audio files (WAV, FLAC, OGG, AIFF, MP3) found")
    return found


@click.command()
@click.argument("inputs", nargs=-1, type=click.Path(path_type=Path))
@click.option("--normal", type=click.Path(path_type=Path), default=None,
              help="A folder of held-out normal files: with --anomalous, measure AUC and pAUC and propose a threshold.")
@click.option("--anomalous", type=click.Path(path_type=Path), default=None,
              help="A folder of anomalous files (with --normal).")
@click.option("--csv", "csv_path", type=click.Path(path_type=Path), default=None,
              help="Write every file's scores and every latent frame's (start and end in seconds) to this CSV.")
@click.option("--plot", "plot_dir", type=click.Path(path_type=Path), default=None,
              help="Folder for PNGs: each input's scores over time; with --normal/--anomalous the ROC (roc.png; "
                   "default RUN/anomaly/).")
@click.option("--threshold", type=float, default=None,
              help=f"Flag files whose score reaches this (an `anomalous` column; exit status {ANOMALOUS_EXIT_CODE} "
                   "when any file is flagged).")
@click.option("--measure", type=click.Choice(MEASURES), default=DEFAULT_MEASURE, show_default=True,
              help="The score that --threshold, the ranking and the proposed threshold use: 'reconstruction' "
                   "error alone or the negative 'elbo' (reconstruction + KL); both are always reported.")
@model_options
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def score(inputs, normal, anomalous, csv_path, plot_dir, threshold, measure, run, checkpoint, device, force,
          quiet) -> None:
    """Anomaly scores of INPUTS (files or folders) under a model trained on normal sounds, in nats per second:
    the reconstruction error and the negative ELBO, per file and per latent frame.

    With --threshold, exit status 0 when no file reaches it and 3 when any does (1: a usage or file error).
    `score --normal DIR --anomalous DIR` reports ROC AUC and pAUC (FPR <= 0.1) of both measures, draws the
    ROC, and proposes a threshold from the normal files alone. docs/anomaly.md has the details.
    """
    if (normal is None) != (anomalous is None):
        raise UserError("--normal and --anomalous go together: pass both folders to measure separation")
    comparing = normal is not None
    if comparing and inputs:
        raise UserError("pass either INPUTS to score or --normal and --anomalous to compare, not both")
    if not comparing and not inputs:
        raise UserError("nothing to score: pass audio files or folders, or --normal DIR --anomalous DIR")
    if comparing and threshold is not None:
        raise UserError("--threshold applies to scoring INPUTS; --normal/--anomalous propose one")
    if plot_dir is not None or comparing:
        from audiovae.io.plots import require_matplotlib

        require_matplotlib()
    groups = {"normal": _audio_files([normal], str(normal)), "anomalous": _audio_files([anomalous], str(anomalous))
              } if comparing else {"": _audio_files(list(inputs), "INPUTS")}
    files = [path for paths in groups.values() for path in paths]
    # every output is checked before the model loads, written in a staging folder and claimed at the end: a
    # failure halfway leaves no half-written CSV or plot, and no output may be one of the scored files
    folders = {}
    if csv_path is not None:
        folders["csv"] = outputs(csv_path.parent, [csv_path.name], force, inputs=files)
    model = load_model(run, checkpoint, device)
    if comparing:
        roc_dir = plot_dir if plot_dir is not None else model.run.anomaly_dir
        folders["plots"] = outputs(roc_dir, ["roc.png"], force, inputs=files)
    elif plot_dir is not None:
        folders["plots"] = outputs(plot_dir, [f"{path.stem}.png" for path in files], force, inputs=files)
    try:
        csv_out = folders["csv"].paths[0] if "csv" in folders else None
        plots = folders["plots"].paths if "plots" in folders else []
        if comparing:
            _compare(model, groups, measure, csv_out, plots[0], not quiet)
            flagged = 0
        else:
            flagged = _score(model, files, measure, threshold, csv_out, plots, not quiet)
        for kind, folder in folders.items():
            written = folder.commit()
            click.echo(f"wrote {written[0]}" if kind == "csv" or comparing else
                       f"wrote {len(written)} plots to {folder.folder}")
    finally:
        for folder in folders.values():
            folder.discard()
    if threshold is not None:
        click.echo(f"{flagged} of {len(files)} files reach the {measure} threshold {threshold:g}")
    if flagged:
        click.get_current_context().exit(ANOMALOUS_EXIT_CODE)


def _score(model, files, measure, threshold, csv_out, plots, progress) -> int:
    """Score files, print a line each, write the CSV and plots (at the staged paths given); the number of files
    flagged."""
    from audiovae.evaluation.anomaly import score_files, scores_table

    results = score_files(model, files, progress)
    flagged = [threshold is not None and s.score(measure) >= threshold for s in results]
    click.echo(f"{'elbo':>12} {'reconstruction':>15}{'  anomalous' if threshold is not None else ''}  file"
               "   (nats per second)")
    for s, flag in zip(results, flagged, strict=True):
        mark = f"  {'yes' if flag else 'no':>9}" if threshold is not None else ""
        click.echo(f"{s.score('elbo'):12.1f} {s.score('reconstruction'):15.1f}{mark}  {s.path}")
    if csv_out is not None:
        write_csv_atomic(csv_out, scores_table(results, threshold, measure), lineterminator="\n")
    if plots:
        from audiovae.io.plots import plot_frame_scores

        for s, path in zip(results, plots, strict=True):
            series = {f"{MEASURE_LABELS[m]}\n(nats/s)": s.frames(m) for m in MEASURES}
            plot_frame_scores(path, s.start_seconds, series, f"{s.path} ({model.checkpoint})", threshold,
                              f"{MEASURE_LABELS[measure]}\n(nats/s)")
    return sum(flagged)


def _compare(model, groups, measure, csv_out, roc_path, progress) -> None:
    """Score both folders, print AUC, pAUC and the proposed threshold, draw the ROC, write the CSV (at the staged
    paths given)."""
    from audiovae.evaluation.anomaly import compare, score_files, scores_table
    from audiovae.io.plots import plot_roc

    normal = score_files(model, groups["normal"], progress, "normal")
    anomalous = score_files(model, groups["anomalous"], progress, "anomalous")
    results = compare(normal, anomalous)
    click.echo(f"{len(normal)} normal and {len(anomalous)} anomalous files")
    click.echo(f"{'measure':<22} {'AUC':>6} {'pAUC':>6}")
    for name, result in results.items():
        click.echo(f"{MEASURE_LABELS[name]:<22} {result.auc:6.3f} {result.partial_auc:6.3f}")
    plot_roc(roc_path, {f"{MEASURE_LABELS[n]} (AUC {r.auc:.3f})": (r.roc.false_positive_rate, r.roc.true_positive_rate)
                        for n, r in results.items()}, MAX_FALSE_POSITIVE_RATE)
    if csv_out is not None:
        labels = ["normal"] * len(normal) + ["anomalous"] * len(anomalous)
        write_csv_atomic(csv_out, scores_table(normal + anomalous, None, measure, labels), lineterminator="\n")
    chosen = results[measure]
    click.echo(f"proposed threshold ({measure}, the {THRESHOLD_PERCENTILE:g}th percentile of the normal files' "
               f"scores): {chosen.threshold:.6g}; on these files it flags {chosen.true_positive_rate_at_threshold:.0%} "
               f"of the anomalous and {chosen.false_positive_rate_at_threshold:.0%} of the normal ones")
    click.echo(f"apply it: audiovae score FILES --checkpoint {model.checkpoint} --measure {measure} "
               f"--threshold {chosen.threshold:.6g}")
