"""The realtime commands of `audiovae`: export a model for hosts, and stream a file through it block by block."""

from __future__ import annotations

from pathlib import Path

import click

from audiovae.cli.common import load_model, model_options, outputs
from audiovae.errors import UserError

MAX_BLOCK = 1 << 16  # samples per block: 4 s at 16 kHz, far above any audio callback
MAX_THREADS = 256


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path), metavar="[RUN] OUT_DIR")
@model_options
def export(paths, run, checkpoint, device, force) -> None:
    """Write OUT_DIR/model.ts (TorchScript, nn~ methods), encode/decode/forward.onnx and card.json.

    RUN (or --run / --checkpoint; default: the most recent run): a causal conv model (model.causal: true)
    streams block by block; other models export whole-signal modules. A run with a learned prior also gets
    a `prior` method (and prior.onnx) that generates latent frames for decode. A conditional run's methods take
    the label as input channels, one per label (card.json lists them).
    """
    from audiovae.realtime.export import export_model

    if len(paths) > 2:
        raise UserError("export takes at most two arguments: [RUN] OUT_DIR")
    out_dir = paths[-1]
    model = load_model(paths[0] if len(paths) == 2 else run, checkpoint, "cpu")
    result = export_model(model, out_dir, force)
    card = result.card
    mode = (f"streams in blocks of {card['frame_samples']} x k samples, latency {card['latency_samples']} samples "
            f"({card['latency_ms']:.1f} ms) plus one block") if card["streams"] else "whole signals (does not stream)"
    check = "" if result.onnx_max_error is None else f"; ONNX Runtime vs PyTorch {result.onnx_max_error:.1e}"
    if result.onnx_relative_error is not None:
        check += (f" on encode, decode within {result.onnx_relative_error:.1%} of the peak (frame models' "
                  "inversion is checked against the peak: Griffin-Lim's iterations grow rounding differences)")
    if result.label_max_error is not None:
        check += (f"; labels {', '.join(card['labels'])} are input channels after each method's others (card.json), "
                  f"each one-hot vs the model under its label {result.label_max_error:.1e}")
    methods = "/".join(card["methods"])
    click.echo(f"wrote {out_dir}: model.ts, {methods}.onnx, card.json; {mode}{check}")


@click.command()
@click.argument("source", type=click.Path(path_type=Path))
@click.argument("destination", type=click.Path(path_type=Path))
@click.option("--block", type=int, default=512, show_default=True,
              help="Samples per block, a multiple of the model's hop (samples per latent frame).")
@click.option("--export", "export_dir", type=click.Path(path_type=Path), default=None,
              help="An export folder (from `audiovae export`). Default: export --run/--checkpoint on the fly.")
@click.option("--engine", type=click.Choice(["torchscript", "onnx"]), default="torchscript", show_default=True,
              help="Which exported file runs the blocks.")
@click.option("--resample", is_flag=True,
              help="Resample a SOURCE at another rate to the model's (a live host would refuse it).")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True,
              help="CPU threads (a live host gives its audio callback one).")
@model_options
def stream(source, destination, block, export_dir, engine, resample, threads, run, checkpoint, device,
           force) -> None:
    """Run SOURCE through a causal model block by block, as a live host would, into DESTINATION (WAV).

    Prints the latency and each block's compute time against its deadline (block / sample rate).
    """
    import tempfile

    import torch

    from audiovae.realtime.export import export_model
    from audiovae.realtime.stream_host import cannot_stream, stream_file

    if threads > MAX_THREADS:  # torch asks the BLAS for them all: 100000 threads hit the process limit
        raise UserError(f"--threads must be in 1..{MAX_THREADS} (got {threads})")
    if not 1 <= block <= MAX_BLOCK:
        raise UserError(f"--block must be in 1..{MAX_BLOCK} samples (got {block}); a live host uses 64 to 2048")
    if destination.is_dir() or not destination.name or destination.name in (".", ".."):
        raise UserError(f"{destination}: is a folder; DESTINATION is the WAV file to write (--force cannot "
                        "replace a folder)")
    inputs = [source, *([checkpoint] if checkpoint else [])]
    if export_dir is not None:
        inputs += [p for p in Path(export_dir).glob("*") if p.is_file()]
    folder = outputs(destination.parent, [destination.name], force, (), inputs)
    torch.set_num_threads(threads)
    with folder, tempfile.TemporaryDirectory(prefix="audiovae-export-") as tmp:
        if export_dir is None:  # export on the fly, once we know the model can stream
            model = load_model(run, checkpoint, "cpu")
            reason = cannot_stream(model.recipe.to_dict()["model"])
            if reason:
                raise UserError(reason)
            export_dir = Path(tmp)
            export_model(model, export_dir, with_prior=False)
        report = stream_file(source, folder.paths[0], export_dir, block, engine, resample)
        folder.commit()
    click.echo(report.summary())
    click.echo(f"wrote {destination}")
