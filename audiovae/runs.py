"""Run folders: `runs/<recipe-name>/`, numbered when taken, and finding the latest run or checkpoint."""

from __future__ import annotations

import re
from pathlib import Path

from audiovae.errors import UserError

DEFAULT_RUNS = Path("runs")


def new_run_dir(root: Path, name: str) -> Path:
    """`root/name`, or `root/name-2`, `-3`, ... when taken."""
    candidate = root / name
    number = 2
    while candidate.exists():
        candidate = root / f"{name}-{number}"
        number += 1
    return candidate


def newest_checkpoint(run_dir: Path) -> Path | None:
    """The most recently written of a run's last.pt and best.pt: either holds the full training state, so a
    run killed while writing one resumes from the other."""
    found = [p for p in (run_dir / "checkpoints" / "last.pt", run_dir / "checkpoints" / "best.pt") if p.exists()]
    return max(found, key=lambda p: p.stat().st_mtime_ns) if found else None


def latest_run_of(root: Path, name: str) -> Path | None:
    """The most recently written run folder of recipe `name` (plain or numbered) that has a checkpoint."""
    pattern = re.compile(rf"^{re.escape(name)}(-\d+)?$")
    runs = [(p, newest_checkpoint(p)) for p in root.glob(f"{name}*") if pattern.match(p.name)]
    runs = [(p, c) for p, c in runs if c is not None]
    return max(runs, key=lambda item: item[1].stat().st_mtime_ns)[0] if runs else None


def all_runs(root: Path) -> list[Path]:
    """Run folders under `root` that hold a checkpoint, newest first."""
    runs = [(p, newest_checkpoint(p)) for p in root.glob("*/") if p.is_dir()]
    runs = [(p, c) for p, c in runs if c is not None]  # last.pt or best.pt: either holds the full state
    return [p for p, _ in sorted(runs, key=lambda item: item[1].stat().st_mtime_ns, reverse=True)]


def resolve_checkpoint(run: str | Path | None = None, checkpoint: str | Path | None = None,
                       root: Path = DEFAULT_RUNS, which: str = "best") -> Path:
    """The checkpoint to load: an explicit file, a run folder's best (else last), or the newest run's."""
    if checkpoint is not None:
        return Path(checkpoint)
    if run is None:
        runs = all_runs(root)
        if not runs:
            raise UserError(f"no trained run found in {root}/ (train one first: audiovae train recipes/quickstart.yaml)"
                            if root.exists() else f"no {root}/ folder here; train a model first "
                            "(audiovae train recipes/quickstart.yaml) or pass --run/--checkpoint")
        run = runs[0]
    run = Path(run)
    if run.is_file() or run.suffix == ".pt":
        return run
    if not run.exists():
        raise UserError(f"{run}: no such run folder or checkpoint file")
    folder = run / "checkpoints"
    for name in (f"{which}.pt", "last.pt"):
        if (folder / name).exists():
            return folder / name
    found = ", ".join(str(p) for p in all_runs(root)[:10]) or "none"
    raise UserError(f"{run}: no checkpoint in {folder} (runs with checkpoints: {found})")
