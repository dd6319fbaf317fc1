"""The run folder: the one module that knows its layout. Everything else asks a `RunFolder` for paths.

    runs/<recipe-name>[-N]/          one run (numbered when the plain name is taken)
        recipe.yaml                  the resolved recipe
        metrics.jsonl                training and validation logs (tensorboard/ beside it when installed)
        run.lock                     held while a stage trains (audiovae.io.lock)
        checkpoints/best.pt last.pt  the VAE; either holds the whole training state
        prior/best.pt last.pt        the learned prior over the VAE's latents (+ its own metrics.jsonl)
        samples/*.wav                what a waveform run sounds like at its last validation
        eval/metrics.json .csv       what `audiovae evaluate` measured
        report/index.html            the listening page `audiovae report` writes (WAVs and PNGs beside it)
        anomaly/roc.png              the ROC of `audiovae score --normal --anomalous` (unless --plot says where)
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from audiovae.errors import UserError
from audiovae.io.lock import RunLock

DEFAULT_RUNS_ROOT = Path("runs")
CHECKPOINT_NAMES = ("best", "last")


def _part(name: str, doc: str) -> property:
    """A path inside the run folder, as a read-only property."""
    return property(lambda self: self.path / name, doc=doc)


class RunFolder:
    """One run's folder. `path` need not exist yet (a new run)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    def __str__(self) -> str:
        return str(self.path)

    def __fspath__(self) -> str:
        return str(self.path)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RunFolder) and other.path == self.path

    def __hash__(self) -> int:
        return hash(self.path)

    # ---- the layout ---------------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.path.name

    recipe_path = _part("recipe.yaml", "The resolved recipe the run was trained with.")
    metrics_path = _part("metrics.jsonl", "Training and validation logs, one JSON object a line.")
    tensorboard_dir = _part("tensorboard", "TensorBoard's event files, when it is installed.")
    samples_dir = _part("samples", "input, reconstruction and prior WAVs of a waveform run's last validation.")
    eval_dir = _part("eval", "What `audiovae evaluate` measured: metrics.json and metrics.csv.")
    report_dir = _part("report", "The listening page `audiovae report` writes: index.html, WAVs and PNGs.")
    anomaly_dir = _part("anomaly", "What `audiovae score --normal --anomalous` drew: roc.png.")
    lock_path = _part("run.lock", "The lock file a training process holds (audiovae.io.lock).")
    checkpoints_dir = _part("checkpoints", "The VAE's best.pt and last.pt.")
    prior_dir = _part("prior", "The learned prior's stage: its best.pt, last.pt and metrics.jsonl.")

    @property
    def prior(self) -> RunFolder:
        """The learned prior's stage as a folder of its own: checkpoints in prior/, its log in prior/metrics.jsonl."""
        return _PriorStage(self.prior_dir)

    def checkpoint(self, name: str = "best") -> Path:
        """checkpoints/<name>.pt (best or last), whether it exists or not."""
        return self.checkpoints_dir / f"{name}.pt"

    def lock(self) -> RunLock:
        """The lock one training process holds on this run while it writes (a context manager)."""
        return RunLock(self.lock_path)

    # ---- what is in it --------------------------------------------------------------------------------------
    def newest_checkpoint(self) -> Path | None:
        """The most recently written of last.pt and best.pt: either holds the full training state, so a run
        killed while writing one resumes from the other."""
        found = [p for p in (self.checkpoint("last"), self.checkpoint("best")) if p.exists()]
        return max(found, key=lambda p: p.stat().st_mtime_ns) if found else None

    def checkpoint_to_load(self, which: str = "best") -> Path | None:
        """<which>.pt, else last.pt, else None."""
        return next((p for p in (self.checkpoint(which), self.checkpoint("last")) if p.exists()), None)

    def holds(self, checkpoint: str | os.PathLike) -> bool:
        """Whether `checkpoint` sits in this run's checkpoints folder."""
        return Path(checkpoint).parent == self.checkpoints_dir

    def clear_stale_checkpoint_files(self) -> None:
        """Create checkpoints/ and remove temp files a run killed mid-write left there."""
        self.checkpoints_dir.mkdir(parents=True, exist_ok=True)
        for stale in self.checkpoints_dir.glob(".*.tmp"):
            stale.unlink()

    # ---- finding runs ---------------------------------------------------------------------------------------
    @staticmethod
    def of_checkpoint(checkpoint: str | os.PathLike) -> RunFolder:
        """The run a checkpoint file belongs to: the folder above the one that holds it."""
        return RunFolder(Path(checkpoint).parent.parent)

    @staticmethod
    def new(root: str | os.PathLike, name: str) -> RunFolder:
        """`root/name`, or `root/name-2`, `-3`, ... when taken."""
        candidate, number = Path(root) / name, 2
        while candidate.exists():
            candidate = Path(root) / f"{name}-{number}"
            number += 1
        return RunFolder(candidate)

    @staticmethod
    def latest_of(root: str | os.PathLike, name: str) -> RunFolder | None:
        """The most recently written run folder of recipe `name` (plain or numbered) that has a checkpoint."""
        pattern = re.compile(rf"^{re.escape(name)}(-\d+)?$")
        runs = [(run, run.newest_checkpoint()) for run in map(RunFolder, Path(root).glob(f"{name}*"))
                if pattern.match(run.name)]
        runs = [(run, found) for run, found in runs if found is not None]
        return max(runs, key=lambda item: item[1].stat().st_mtime_ns)[0] if runs else None

    @staticmethod
    def all_in(root: str | os.PathLike) -> list[RunFolder]:
        """Run folders under `root` that hold a checkpoint, newest first."""
        runs = [(run, run.newest_checkpoint()) for run in map(RunFolder, Path(root).glob("*/")) if run.path.is_dir()]
        runs = [(run, found) for run, found in runs if found is not None]
        return [run for run, _ in sorted(runs, key=lambda item: item[1].stat().st_mtime_ns, reverse=True)]


class _PriorStage(RunFolder):
    """The prior's folder: checkpoints directly inside it (prior/best.pt), its own metrics.jsonl."""

    checkpoints_dir = property(lambda self: self.path, doc="The prior's best.pt and last.pt.")


def resolve_checkpoint(run: str | os.PathLike | None = None, checkpoint: str | os.PathLike | None = None,
                       root: str | os.PathLike = DEFAULT_RUNS_ROOT, which: str = "best") -> Path:
    """The checkpoint to load: an explicit file, a run folder's best (else last), or the newest run's."""
    root = Path(root)
    if checkpoint is not None:
        return Path(checkpoint)
    if run is None:
        runs = RunFolder.all_in(root)
        if not runs:
            raise UserError(f"no trained run found in {root}/ (train one first: audiovae train recipes/quickstart.yaml)"
                            if root.exists() else f"no {root}/ folder here; train a model first "
                            "(audiovae train recipes/quickstart.yaml) or pass --run/--checkpoint")
        run = runs[0]
    path = Path(run)
    if path.is_file() or path.suffix == ".pt":
        return path
    if not path.exists():
        raise UserError(f"{path}: no such run folder or checkpoint file")
    found = RunFolder(path).checkpoint_to_load(which)
    if found is None:
        others = ", ".join(str(p) for p in RunFolder.all_in(root)[:10]) or "none"
        raise UserError(f"{path}: no checkpoint in {RunFolder(path).checkpoints_dir} (runs with checkpoints: {others})")
    return found
