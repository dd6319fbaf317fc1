"""Atomic file writing: a crash or a full disk never leaves a half-written output behind."""

from __future__ import annotations

import csv
import errno
import hashlib
import io
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from audiovae.errors import UserError
from audiovae.io.outputs import (
    Legacy,
    check_replaceable_folder,
    clear_stale,
    make_folder,
    mark_folder,
    refuse_folder_holding_inputs,
)

DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
# torch.save and ndarray.tofile report a failed write without its errno ("unexpected pos", "N requested and
# M written"): when that happens with less than this much space left, the disk being full is the reason.
NEARLY_FULL_BYTES = 1 << 20


class DiskFullError(UserError):
    """A write failed because the file system is full (or the user's quota is used up)."""


def _free_bytes(directory: Path) -> int | None:
    try:
        stats = os.statvfs(directory)
    except (AttributeError, OSError):  # no statvfs on Windows
        return None
    return stats.f_bavail * stats.f_frsize


def is_disk_full(error: BaseException, directory: str | os.PathLike) -> bool:
    """Whether `error`, raised while writing into `directory`, means the disk (or quota) is full."""
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, OSError) and cause.errno in DISK_FULL_ERRNOS:
            return True
        cause = cause.__cause__ or cause.__context__
    if isinstance(error, RuntimeError) or (isinstance(error, OSError) and error.errno is None):
        free = _free_bytes(Path(directory))
        return free is not None and free < NEARLY_FULL_BYTES
    return False


def _disk_full_message(path: Path, error: BaseException) -> str:
    reason = (error.strerror if isinstance(error, OSError) and error.errno in DISK_FULL_ERRNOS and error.strerror
              else "No space left on device")
    return (f"{path}: the disk is full ({reason}); nothing was written and any previous {path.name} is unchanged; "
            "free some space and run the command again")


def require_free_space(folder: str | os.PathLike, needed_bytes: int, what: str) -> None:
    """Raise UserError when the file system holding `folder` (or its nearest existing parent) has less than
    `needed_bytes` free: say how much `what` needs before any work starts."""
    existing = Path(folder).absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    free = _free_bytes(existing)
    if free is not None and needed_bytes > free:
        raise UserError(f"{folder}: {what} need {_size(needed_bytes)} but the disk has only {_size(free)} free")


def _size(count: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB", "PB"):
        if count < 1000 or unit == "PB":
            return f"{count:.0f} {unit}" if unit == "bytes" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} PB"


def _make_parent(path: Path) -> None:
    """Create the folder `path` goes into; a parent that is a file, or a read-only place, is a UserError."""
    if path.parent.is_file():
        raise UserError(f"{path}: cannot write here: {path.parent} is a file, not a folder")
    make_folder(path.parent)


def _temp_prefix(path: Path) -> str:
    """A hidden temp name's start: at most 100 characters of the final name, so a 255-character name still fits."""
    return f".{path.name[:100]}."


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()  # temp files are private (0600); outputs get the user's usual permissions


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success fsync it and rename it onto `path`.

    On an exception the temporary file is removed and `path` is left as it was.
    """
    path = Path(path)
    _make_parent(path)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent)
    except OSError as error:
        if is_disk_full(error, path.parent):
            raise DiskFullError(_disk_full_message(path, error)) from None
        raise UserError(f"{path}: cannot write here ({error.strerror or error})") from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except DiskFullError:
        raise
    except Exception as error:  # torch.save, soundfile and numpy each report a full disk differently
        if is_disk_full(error, path.parent):
            raise DiskFullError(_disk_full_message(path, error)) from None
        raise
    finally:
        if tmp.exists():
            tmp.unlink()


def write_atomic(path: str | os.PathLike, write: Callable[[Path], Any]) -> Path:
    """Call `write(tmp_path)` and move the result onto `path` atomically."""
    with atomic_path(path) as tmp:
        write(tmp)
    return Path(path)


def write_json_atomic(path: str | os.PathLike, data: Any) -> Path:
    """Write `data` as indented JSON, atomically."""
    text = json.dumps(data, indent=2, sort_keys=False) + "\n"
    return write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_csv_atomic(path: str | os.PathLike, rows: Iterable[Sequence[Any]], lineterminator: str = "\r\n") -> Path:
    """Write rows (the header first) as CSV, atomically; lines end as the csv module's default unless told."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator=lineterminator).writerows(rows)
    return write_atomic(path, lambda tmp: tmp.write_text(buffer.getvalue(), encoding="utf-8"))


@contextmanager
def atomic_directory(path: str | os.PathLike, force: bool = False, *, inputs=(), command: str = "audiovae",
                     legacy: Legacy | None = None) -> Iterator[Path]:
    """Build a directory in a temporary sibling and rename it onto `path` when the block succeeds.

    An existing `path` is replaced only with `force` and only when audiovae wrote everything in it (its marker,
    audiovae.io.outputs, lists it; `legacy` recognizes a folder from before markers); it stays untouched until
    the new one is complete. A `path` that is or holds one of `inputs` (or the current folder) is refused.
    The new folder's marker lists what the block wrote. Checked before the block runs and again at the end.
    """
    path = Path(path)
    refuse_folder_holding_inputs(path, inputs)
    check_replaceable_folder(path, force, legacy)
    _make_parent(path)
    prefix = f"{_temp_prefix(path)}partial-"
    clear_stale(path.parent, prefix)  # a killed run's folder
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", suffix=".partial", dir=path.parent))
    except OSError as error:
        if is_disk_full(error, path.parent):
            raise DiskFullError(_disk_full_message(path, error)) from None
        raise UserError(f"{path}: cannot write here ({error.strerror or error})") from None
    try:
        yield tmp
        mark_folder(tmp, command)
        os.chmod(tmp, 0o777 & ~_UMASK)
        check_replaceable_folder(path, force, legacy)  # again: something may have appeared meanwhile
        if path.exists() and any(path.iterdir()):
            old = path.with_name(f".{path.name[:100]}.old-{os.getpid()}")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)  # fails (ENOTEMPTY, EEXIST) when a folder filled meanwhile
        _fsync_dir(path.parent)
    except Exception as error:  # also a DiskFullError naming a file inside tmp: name the folder instead
        if isinstance(error, DiskFullError) or is_disk_full(error, path.parent):
            raise DiskFullError(_disk_full_message(path, error)) from None
        if isinstance(error, OSError) and error.errno in (errno.ENOTEMPTY, errno.EEXIST):
            raise FileExistsError(path) from None
        raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes, read 1 MiB at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
