"""Output folders: a marker lists what audiovae wrote, so `--force` replaces only its own files, no command
writes over one of its inputs, and final names are claimed atomically (a file that appears meanwhile is kept).

    OUT/.audiovae-outputs.json     {"format": "audiovae-outputs", "files": {"sample_000.wav":
                                       {"command": "generate", "id": [inode, size, mtime_ns]}, ...}}
    OUT/.audiovae-staging-PID-*/   where a running command writes; its files are linked into OUT at the end

A folder written whole (prepare's dataset) is replaced with `--force` only when everything in it is listed in
its marker; a command that writes files into a folder replaces (with `--force`) only the names listed there
whose file is still the one audiovae wrote (same inode, size and mtime: a file the user replaced or edited is theirs).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from audiovae.errors import UserError

MARKER = ".audiovae-outputs.json"
MARKER_FORMAT = "audiovae-outputs"
STAGING_PREFIX = ".audiovae-staging-"

# names a folder written before the marker existed holds, as its command recognizes them (e.g. samples.json's list)
Legacy = Callable[[Path], Iterable[str]]


# ---- the marker -----------------------------------------------------------------------------------------------
def read_entries(folder: str | os.PathLike) -> dict[str, dict]:
    """{file name: {"command": ..., "id": [inode, size, mtime_ns]}} from `folder`'s marker; {} when there is none
    or it is damaged (then nothing in the folder counts as audiovae's: the safe side)."""
    try:
        data = json.loads((Path(folder) / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("format") != MARKER_FORMAT or not isinstance(data.get("files"), dict):
        return {}
    return {str(name): entry for name, entry in data["files"].items() if isinstance(entry, dict)}


def file_id(path: Path) -> list[int] | None:
    """[inode, size, mtime_ns] of a regular file (not followed through a symlink), None for anything else: a file
    the user replaced or edited since audiovae wrote it no longer matches its entry."""
    try:
        info = os.lstat(path)
    except OSError:
        return None
    return [info.st_ino, info.st_size, info.st_mtime_ns] if stat.S_ISREG(info.st_mode) else None


def read_marker(folder: str | os.PathLike) -> dict[str, str]:
    """{file name: command} of the files in `folder` that are still as audiovae wrote them (an entry without an
    id, recorded before the file was written, matches any regular file)."""
    folder = Path(folder)
    return {name: str(entry.get("command")) for name, entry in read_entries(folder).items()
            if entry.get("id") is None or entry.get("id") == file_id(folder / name)}


def write_marker(folder: str | os.PathLike, files: dict[str, str], keep: dict[str, dict] | None = None) -> None:
    """Write `folder`'s marker for `files` ({name: command}; each with its file's id now), atomically; `keep`:
    entries carried over as they are."""
    folder = Path(folder)
    entries = {**(keep or {}), **{name: {"command": command, "id": file_id(folder / name)}
                                  for name, command in files.items()}}
    tmp = folder / f"{MARKER}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps({"format": MARKER_FORMAT, "version": 1, "files": dict(sorted(entries.items()))},
                              indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, folder / MARKER)


def recognized_by(descriptor: str, file_format: str, names: Sequence[str]) -> Legacy:
    """A Legacy for a folder from before markers that holds `descriptor` (a JSON file whose "format" is
    `file_format`): then `names` are audiovae's."""

    def recognize(folder: Path) -> list[str]:
        try:
            data = json.loads((folder / descriptor).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return []
        return list(names) if isinstance(data, dict) and data.get("format") == file_format else []

    return recognize


def owned_names(folder: Path, legacy: Legacy | None = None) -> set[str]:
    """The names in `folder` audiovae wrote: its marker's, else what `legacy` recognizes in an older folder."""
    names = set(read_marker(folder))
    if not names and legacy is not None and folder.is_dir():
        names = {name for name in legacy(folder) if (folder / name).is_file()}
    return names


@contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
    """Hold an exclusive flock on `folder` itself while its marker is read, changed and written."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


# ---- inputs are never written over ----------------------------------------------------------------------------
def real_path(path: str | os.PathLike) -> Path:
    """The absolute path with symlinks resolved; never raises (a symlink loop stays as far as it resolves)."""
    return Path(os.path.realpath(path))


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        info = os.stat(path)  # follows symlinks: a link to an input is that input
    except (OSError, ValueError):
        return None
    return info.st_dev, info.st_ino


def refuse_overwriting_inputs(targets: Iterable[str | os.PathLike], inputs: Iterable[str | os.PathLike]) -> None:
    """UserError when a target is one of the inputs: the same resolved path, or the same file by (device, inode),
    so hard links and symlinks count. The message never advises --force: it would destroy the input."""
    by_path: dict[Path, Path] = {}
    by_identity: dict[tuple[int, int], Path] = {}
    for given in inputs:
        given = Path(given)
        by_path[real_path(given)] = given
        if (identity := _identity(given)) is not None:
            by_identity[identity] = given
    for target in map(Path, targets):
        hit = by_path.get(real_path(target))
        if hit is None and (identity := _identity(target)) is not None:
            hit = by_identity.get(identity)
        if hit is not None:
            raise UserError(f"{target}: is the input {hit}; audiovae never writes over its inputs, with or without "
                            "--force: choose another output")


def refuse_folder_holding_inputs(folder: Path, inputs: Iterable[str | os.PathLike]) -> None:
    """UserError when replacing `folder` would delete the current folder or an input (one inside it, or itself)."""
    resolved, here = real_path(folder), real_path(Path.cwd())
    if resolved == here or resolved in here.parents:
        raise UserError(f"{folder}: is the folder you are in (or holds it); audiovae writes a new folder: name one")
    for given in map(Path, inputs):
        base = real_path(given)
        if base == resolved or resolved in base.parents:
            raise UserError(f"{folder}: holds the input {given}, which replacing it would delete; audiovae never "
                            "writes over its inputs, with or without --force: choose another output folder")


# ---- a folder written whole (prepare) --------------------------------------------------------------------------
def check_replaceable_folder(folder: Path, force: bool, legacy: Legacy | None = None) -> None:
    """UserError unless `folder` may become a new folder: it is absent or empty, or (with `force`) everything
    in it is listed in its marker. Anything else is named and kept, with or without --force."""
    if not os.path.lexists(folder):
        return
    if not folder.is_dir():
        raise UserError(f"{folder}: exists and is not a folder; audiovae does not replace it, with or without "
                        "--force: move it or choose another output")
    entries = sorted(os.listdir(folder))
    if not entries:
        return  # an empty folder: nothing to lose
    owned = owned_names(folder, legacy) | {MARKER}
    foreign = [name for name in entries if name not in owned]
    if foreign:
        more = f" and {len(foreign) - 5} more" if len(foreign) > 5 else ""
        raise UserError(f"{folder}: holds files audiovae did not write ({', '.join(foreign[:5])}{more}); --force "
                        "replaces only a folder audiovae wrote: move them or choose another output folder")
    if not force:
        raise UserError(f"{folder}: already exists; pass --force to replace it")


def mark_folder(folder: Path, command: str) -> None:
    """List everything now in `folder` (a folder about to be put in place whole) in its marker."""
    write_marker(folder, {name: command for name in os.listdir(folder) if name != MARKER})


# ---- leftovers of killed commands -------------------------------------------------------------------------------
def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def clear_stale(folder: Path, prefix: str) -> None:
    """Remove `folder/<prefix><pid>-*` (and `.<pid>.`) folders whose process is gone: a killed command's leftovers."""
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for name in names:
        if not name.startswith(prefix):
            continue
        digits = name[len(prefix):].split("-", 1)[0].split(".", 1)[0]
        if digits.isdigit() and not _alive(int(digits)):
            shutil.rmtree(folder / name, ignore_errors=True)


def make_folder(folder: Path) -> None:
    """Create `folder` and its parents; a parent that is a file, or a place that cannot be written, is a UserError."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise UserError(f"{folder}: cannot write here: it or a folder above it is a file") from None
    except OSError as error:
        raise UserError(f"{folder}: cannot create the folder ({error.strerror or error})") from None
    if not folder.is_dir():
        raise UserError(f"{folder}: cannot write here: it is not a folder")


# ---- files written into a folder (generate, reconstruct, encode, ...) -------------------------------------------
class OutputFolder:
    """The files one command writes into `folder`: checked before any work, written in a private staging folder
    (`paths`), claimed under their final names by `commit()`.

    names: the files (companions: suffixes written beside each, e.g. '.json'); inputs: every file the command
    reads; whole_set: the names are the command's whole output here, so `--force` also removes what an earlier
    run of the same command wrote and this one does not (generate -n 2 after -n 5).
    """

    def __init__(self, folder: str | os.PathLike, command: str, names: Sequence[str], force: bool = False,
                 inputs: Iterable[str | os.PathLike] = (), companions: Sequence[str] = (), whole_set: bool = False,
                 legacy: Legacy | None = None):
        self.folder, self.command, self.names = Path(folder), command, list(names)
        self.force, self.whole_set = force, whole_set
        if os.path.lexists(self.folder) and not self.folder.is_dir():
            raise UserError(f"{self.folder}: exists and is not a folder (the output is a folder)")
        seen: dict[str, int] = {}
        for i, name in enumerate(self.names):
            if name in seen:
                raise UserError(f"inputs {seen[name] + 1} and {i + 1} would both be written to {self.folder / name}; "
                                "rename one or write them into different folders")
            seen[name] = i
        every = self.names + [str(Path(n).with_suffix(s)) for n in self.names for s in companions]
        refuse_overwriting_inputs([self.folder / name for name in every], inputs)
        self.legacy = legacy
        self.replaceable = self._check_existing(every, legacy)
        make_folder(self.folder)
        clear_stale(self.folder, STAGING_PREFIX)
        try:
            self.staging = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-", dir=self.folder))
        except OSError as error:
            raise UserError(f"{self.folder}: cannot write here ({error.strerror or error})") from None

    def _check_existing(self, names: list[str], legacy: Legacy | None) -> set[str]:
        present = [name for name in names if os.path.lexists(self.folder / name)]
        if not present:
            return set()
        owned = owned_names(self.folder, legacy)
        for name in present:
            path = self.folder / name
            if path.is_dir() and not path.is_symlink():
                raise UserError(f"{path}: is a folder where audiovae writes a file; --force cannot replace it: "
                                "move it or choose another output folder")
            if name not in owned or path.is_symlink():
                raise UserError(f"{path}: already exists and audiovae did not write it (it is not in "
                                f"{self.folder / MARKER}); --force replaces only audiovae's own outputs: move it "
                                "or choose another output folder")
        if not self.force:
            raise UserError(f"{self.folder / present[0]}: already exists ({len(present)} of the outputs do); pass "
                            "--force to replace audiovae's earlier outputs")
        return set(present)

    @property
    def paths(self) -> list[Path]:
        """Where to write each of `names` (in the staging folder until commit)."""
        return [self.staging / name for name in self.names]

    def final(self, name: str) -> Path:
        """The path `name` will have after commit."""
        return self.folder / name

    def commit(self) -> list[Path]:
        """Claim every staged file under its final name: an earlier output of audiovae is replaced (with --force),
        any other name is created exclusively (a hard link, else O_EXCL), so a file that appeared meanwhile is
        kept and named in a UserError. Updates the marker; returns the final paths written."""
        written, clashes = [], []
        staged = sorted(name for name in os.listdir(self.staging) if (self.staging / name).is_file())
        with folder_lock(self.folder):
            earlier = read_entries(self.folder)
            still_ours = owned_names(self.folder, self.legacy)  # one replaced since the start is not replaceable
            mine: dict[str, str] = {}
            for name in staged:
                if self._claim(self.staging / name, self.folder / name, name in still_ours):
                    mine[name] = self.command
                    written.append(self.folder / name)
                else:
                    clashes.append(self.folder / name)
            current = read_marker(self.folder)
            if self.whole_set and self.force:  # the earlier run's files this one does not write
                for name, command in current.items():
                    old = self.folder / name
                    if command == self.command and name not in mine and file_id(old) is not None:
                        old.unlink()
            keep = {name: entry for name, entry in earlier.items() if name not in mine and file_id(self.folder / name)}
            write_marker(self.folder, mine, keep)
        self.discard()
        if clashes:
            raise UserError(f"{clashes[0]}: appeared while audiovae was writing it ({len(clashes)} outputs did); it "
                            "is kept as it is and this output was not written: run again into another folder")
        return written

    def _claim(self, staged: Path, final: Path, still_ours: bool) -> bool:
        if final.name in self.replaceable and still_ours and not final.is_symlink():
            os.replace(staged, final)
            return True
        try:
            os.link(staged, final)
        except FileExistsError:
            return False
        except OSError:  # a file system without hard links: create the name exclusively, then fill it
            try:
                os.close(os.open(final, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            except FileExistsError:
                return False
            os.replace(staged, final)
            return True
        staged.unlink()
        return True

    def discard(self) -> None:
        """Remove the staging folder and whatever is left in it."""
        shutil.rmtree(self.staging, ignore_errors=True)

    def __enter__(self) -> OutputFolder:
        return self

    def __exit__(self, *exc) -> None:
        self.discard()


def check_new_folder(folder: Path, inputs: Iterable[str | os.PathLike] = ()) -> None:
    """For a folder a command fills itself (a run folder): it must not be the current folder, hold an input or be
    a file, and must be creatable."""
    if os.path.lexists(folder) and not folder.is_dir():
        raise UserError(f"{folder}: exists and is not a folder; choose another")
    refuse_folder_holding_inputs(folder, inputs)
    make_folder(folder)
