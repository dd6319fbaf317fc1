"""`audiovae report`: a run's listening page, one self-contained folder with index.html, WAVs and PNGs.

For a few held-out files of the run's dataset (the manifest's valid split) the input beside its
reconstruction; prior samples; prompt continuations when a prompt is given; the table `audiovae evaluate`
printed (never measured here: evaluate is slow); the training curves. With a second run, its sounds
stand in a second column for the same files and seeds. The folder is built beside its destination and
renamed onto it when complete (audiovae.io.atomic.atomic_directory).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from audiovae.data.manifest import manifest_path, read_manifest
from audiovae.errors import UserError
from audiovae.evaluation.evaluate import format_table, held_out_files
from audiovae.evaluation.report_html import Clip, Row, RunPanel, Section, render_page
from audiovae.io.atomic import atomic_directory
from audiovae.io.audio import resample, write_wav
from audiovae.io.run_folder import DEFAULT_RUNS_ROOT, RunFolder
from audiovae.synthesis.model import Model, load

CLIP_SECONDS = 10.0  # held-out files and the prompt are cut to their first CLIP_SECONDS on the page
CONTINUATIONS = 2  # prompt continuations per run, seeds seed and seed + 1
PAGE = "index.html"
GAUSSIAN_LINE = "N(0, I), valid"  # the prior's log: N(0, I)'s held-out NLL beside the learned prior's


@dataclass(frozen=True)
class ReportResult:
    """Where the page was written and what it holds."""

    folder: Path
    page: Path
    files: int
    samples: int
    continuations: int
    runs: list[str]
    skipped: list[str] = field(default_factory=list)


def report(run: str | Path | None = None, output: str | Path | None = None, force: bool = False,
           compare: str | Path | None = None, files: int = 3, samples: int = 4, seconds: float = 4.0,
           prompt: str | Path | None = None, seed: int = 0, data: str | Path | None = None, device: str = "auto",
           progress: bool = True, runs_root: str | Path = DEFAULT_RUNS_ROOT) -> ReportResult:
    """Write the listening page of `run` (default: the newest run) into `output` (default: RUN/report).

    files: held-out files shown (the first readable ones of the valid split, each cut to CLIP_SECONDS);
    samples: prior samples of `seconds` each, sample i with seed + i; prompt: a sound whose continuations
    (CONTINUATIONS of `seconds` each) are shown too; compare: a second run, shown beside the first for the
    same files, seeds and prompt. An existing folder is replaced only with `force` (UserError otherwise).
    """
    from tqdm import tqdm

    from audiovae.io.plots import require_matplotlib

    require_matplotlib("audiovae report")
    if files < 1 or samples < 0 or not seconds > 0:
        raise UserError("--files must be at least 1, --samples at least 0 and --seconds positive")
    models = [load(run, device=device, runs_root=runs_root)]
    if compare is not None:
        models.append(load(compare, device=device, runs_root=runs_root))
    folder = Path(output) if output is not None else models[0].run.report_dir
    dataset = Path(data) if data is not None else Path(models[0].recipe.data.folder)
    manifest = read_manifest(dataset)
    sources = held_out_files(manifest, "valid")
    # what the page reads: atomic_directory refuses a folder holding one of them, with or without --force, and
    # checks the folder before the page is built (and again when it is complete)
    inputs = [*(model.checkpoint for model in models), manifest_path(dataset), *sources[:files],
              *([Path(prompt)] if prompt else [])]
    if not sources:
        raise UserError(f"{dataset}: no files in the 'valid' split to listen to (prepare it with "
                        "--valid-fraction above 0, or pass --data another dataset)")
    prompt_wave = models[0].load_audio(prompt)[: round(CLIP_SECONDS * models[0].sample_rate)] if prompt else None
    labels = _labels(models)
    clips_per_model = min(files, len(sources)) + samples + (CONTINUATIONS if prompt else 0)
    steps = clips_per_model * len(models) + 1  # + 1: the measurements and curves
    try:
        with atomic_directory(folder, force=force, inputs=inputs, command="report") as tmp, \
                tqdm(total=steps, unit="clip", desc="report", disable=not progress, file=sys.stderr) as bar:
            page = _Page(tmp, models, bar)
            heldout, skipped = page.held_out(sources, files)
            sections = [heldout, page.prior_samples(samples, seconds, seed)] if samples else [heldout]
            if prompt_wave is not None:
                sections.append(page.continuations(Path(prompt).name, prompt_wave, seconds, seed))
            panels = [_panel(model.run, label, _letter(index), tmp) for index, (model, label)
                      in enumerate(zip(models, labels, strict=True))]
            bar.update(1)
            facts = [f"{label}: {model.checkpoint} ({model.recipe.model.family} model, {model.sample_rate} Hz, "
                     f"{model.latent_size} latents at {model.sample_rate / model.frame_samples:g} frames/s)"
                     for model, label in zip(models, labels, strict=True)]
            facts.append(f"held-out files from {dataset} (valid split)")
            title = "audiovae report: " + " vs ".join(labels)
            (tmp / PAGE).write_text(render_page(title, facts, sections, panels), encoding="utf-8")
    except FileExistsError:
        raise UserError(f"{folder}: appeared while the report was written; pass --force to replace it") from None
    shown = len(heldout.rows)
    return ReportResult(folder, folder / PAGE, shown, samples, CONTINUATIONS if prompt else 0,
                        [str(model.run) for model in models], skipped)


def _labels(models: list[Model]) -> list[str]:
    """Column headings: the run folders' names, or their paths when the names are the same."""
    names = [model.run.name for model in models]
    return names if len(set(names)) == len(names) else [str(model.run) for model in models]


class _Page:
    """Writes the page's WAVs and PNGs into `folder`, one model per column, and advances the progress bar."""

    def __init__(self, folder: Path, models: list[Model], bar):
        self.folder = folder
        self.models = models
        self.bar = bar
        self.labels = _labels(models)

    def clip(self, name: str, wave: np.ndarray, sample_rate: int, caption: str = "") -> Clip:
        """Write name.wav and name.png (its log-mel spectrogram)."""
        from audiovae.io.plots import plot_spectrogram

        write_wav(self.folder / f"{name}.wav", wave, sample_rate)
        plot_spectrogram(self.folder / f"{name}.png", wave, sample_rate)
        seconds = f"{len(wave) / sample_rate:.2f} s"
        return Clip(f"{name}.wav", f"{name}.png", f"{caption}, {seconds}" if caption else seconds)

    def held_out(self, sources: list[Path], count: int) -> tuple[Section, list[str]]:
        """The first `count` readable held-out files, each beside every model's reconstruction of it."""
        first = self.models[0]
        rows, skipped = [], []
        for source in sources:
            if len(rows) == count:
                break
            try:
                wave = first.load_audio(source)[: round(CLIP_SECONDS * first.sample_rate)]
            except UserError as error:
                skipped.append(str(error))
                self.bar.write(f"warning: skipped {error}", file=sys.stderr)
                continue
            number = len(rows) + 1
            cells: list[Clip | str] = [self.clip(f"heldout-{number}-input", wave, first.sample_rate)]
            for index, model in enumerate(self.models):
                own = wave if model is first else model.load_audio(source)[: round(CLIP_SECONDS * model.sample_rate)]
                cells.append(self.clip(f"heldout-{number}-{_letter(index)}", model.reconstruct(own),
                                       model.sample_rate))
                self.bar.update(1)
            rows.append(Row(source.name, cells))
        if not rows:
            raise UserError(f"none of the {len(sources)} held-out files could be read (first: {skipped[0]})")
        intro = (f"{counted(len(rows), 'held-out file')} (first {CLIP_SECONDS:g} s of each): the input, then each run's "
                 "reconstruction of it.")
        return Section("Held-out files and their reconstructions", intro, ["input", *self.labels], rows), skipped

    def prior_samples(self, count: int, seconds: float, seed: int) -> Section:
        """`count` samples of each model's prior (its learned one when it has one), sample i with seed + i."""
        rows = []
        for i in range(count):
            cells: list[Clip | str] = []
            for index, model in enumerate(self.models):
                wave = model.generate(1, seconds, seed=seed + i)[0]
                cells.append(self.clip(f"sample-{i + 1}-{_letter(index)}", wave, model.sample_rate))
                self.bar.update(1)
            rows.append(Row(f"seed {seed + i}", cells))
        columns = [f"{label} ({_prior_name(model)})" for label, model in zip(self.labels, self.models, strict=True)]
        return Section("Prior samples", f"{counted(count, 'sound')} of {seconds:g} s decoded from each run's prior.", columns,
                       rows)

    def continuations(self, name: str, wave: np.ndarray, seconds: float, seed: int) -> Section:
        """The prompt, then each model's continuations of it (its reconstruction, then `seconds` more)."""
        first = self.models[0]
        prompt = self.clip("prompt", wave, first.sample_rate, name)
        rows = []
        for i in range(CONTINUATIONS):
            cells: list[Clip | str] = [prompt if i == 0 else "(the same prompt)"]
            for index, model in enumerate(self.models):
                own = wave if model is first else resample(wave, first.sample_rate, model.sample_rate)
                sound = model.continue_sound(own, seconds, seed=seed + i)
                cells.append(self.clip(f"continuation-{i + 1}-{_letter(index)}", sound, model.sample_rate))
                self.bar.update(1)
            rows.append(Row(f"seed {seed + i}", cells))
        intro = (f"The prompt {name} (first {CLIP_SECONDS:g} s), then each run's reconstruction of it followed by "
                 f"{seconds:g} s of new material from its prior.")
        return Section("Prompt continuations", intro, ["prompt", *self.labels], rows)


def counted(count: int, noun: str) -> str:
    """'1 sound', '2 sounds'."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _letter(index: int) -> str:
    return "ab"[index]


def _prior_name(model: Model) -> str:
    return "learned prior" if model.learned_prior is not None else "N(0, I) prior"


def _panel(run: RunFolder, label: str, letter: str, folder: Path) -> RunPanel:
    """The evaluate table of `run` (or the command that makes it) and its training curves' PNG."""
    metrics_file = run.eval_dir / "metrics.json"
    table, note = None, f"no measurements yet: `audiovae evaluate {run}` writes {metrics_file}"
    if metrics_file.exists():
        try:
            table = format_table(json.loads(metrics_file.read_text(encoding="utf-8")))
            note = f"from {metrics_file}, written by `audiovae evaluate`"
        except (ValueError, KeyError, TypeError):
            note = (f"{metrics_file} cannot be read (written by another version?): "
                    f"`audiovae evaluate {run}` writes it again")
    panels = [(name, lines) for name, lines in (("VAE loss", training_curves(run.metrics_path)),
                                                ("prior NLL, nats per frame", training_curves(run.prior.metrics_path)))
              if lines]
    if not panels:
        return RunPanel(label, table, note, None, f"no training log in {run.metrics_path}")
    from audiovae.io.plots import plot_curves

    png = f"curves-{letter}.png"
    plot_curves(folder / png, panels)
    logs = run.metrics_path if len(panels) == 1 else f"{run.metrics_path} and {run.prior.metrics_path}"
    return RunPanel(label, table, note, png, f"from {logs}")


def training_curves(path: Path) -> dict[str, list[tuple[int, float]]]:
    """Train and valid loss against step from a metrics.jsonl (and N(0, I)'s NLL from a prior's log);
    unreadable lines (a run killed mid-write) are left out, a missing file gives {}."""
    if not path.exists():
        return {}
    lines: dict[str, list[tuple[int, float]]] = {}
    for text in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record: dict[str, Any] = json.loads(text)
            step, split = int(record["step"]), record["split"]
        except (ValueError, KeyError, TypeError):
            continue
        if split in ("train", "valid") and isinstance(record.get("loss"), (int, float)):
            lines.setdefault(split, []).append((step, float(record["loss"])))
        if split == "valid" and isinstance(record.get("gaussian_nll"), (int, float)):
            lines.setdefault(GAUSSIAN_LINE, []).append((step, float(record["gaussian_nll"])))
    return {name: lines[name] for name in ("train", "valid", GAUSSIAN_LINE) if name in lines}  # same colours
