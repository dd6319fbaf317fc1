"""One `audiovae train` per run folder: an advisory lock file (`RunFolder.lock_path`), held while training.

The lock is `fcntl.flock` on a descriptor kept open, not only the file's existence: the kernel drops a
flock when its process dies, however it dies (SIGKILL, OOM killer), so a crashed run never blocks the
next one on the same host. The file's JSON ({pid, host, started}) names the holder in the error a second
process gets, and a file left by a dead holder is taken over with a warning.
"""

from __future__ import annotations

import datetime
import errno
import json
import os
import socket
import sys
from pathlib import Path
from types import TracebackType

from audiovae.errors import UserError

try:
    import fcntl
except ImportError:  # Windows: no flock; the lock file alone, with the pid check, does the job
    fcntl = None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    except (OSError, OverflowError):
        return False
    return True


def _read_holder(fd: int) -> dict:
    """The JSON a holder wrote, or {} when the file is empty or unreadable."""
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 4096).decode("utf-8", "replace")
        holder = json.loads(text) if text.strip() else {}
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def _describe(holder: dict) -> str:
    if not holder:
        return "another process"
    return (f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}, "
            f"since {holder.get('started', '?')}")


class RunLock:
    """Context manager holding the lock file `path` (a run's: `RunFolder.lock()`) for a training run.

    Entering raises UserError (one line: the holder's pid, host, start time and the lock path) when a
    live process holds it; leaving removes the file and drops the lock.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                holder = self._lock_or_refuse(fd)
                # the file may have been removed (and re-created) by the holder releasing it between our
                # open and our flock: then we hold a lock on a deleted file, so start again
                if os.path.exists(self.path) and os.stat(self.path).st_ino == os.fstat(fd).st_ino:
                    break
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)
        if holder:
            print(f"warning: {self.path}: taking over the lock of a run that is no longer running "
                  f"({_describe(holder)})", file=sys.stderr)
        me = {"pid": os.getpid(), "host": socket.gethostname(),
              "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, (json.dumps(me) + "\n").encode("utf-8"))
        os.fsync(fd)
        self.fd = fd

    def _lock_or_refuse(self, fd: int) -> dict:
        """Lock `fd` or raise UserError; returns a stale holder's record ({} when there was none)."""
        holder = _read_holder(fd)
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as error:
                if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise
                self._refuse(_read_holder(fd))
            return holder  # the kernel says nobody holds it: a record left in the file is from a dead run
        if holder and (holder.get("host") != socket.gethostname() or _pid_alive(int(holder.get("pid", 0)))):
            self._refuse(holder)
        return holder

    def _refuse(self, holder: dict) -> None:
        raise UserError(f"{self.path}: this run folder is in use by another `audiovae train` "
                        f"({_describe(holder)}); wait for it to finish, or choose another --run-dir "
                        f"(delete the lock file only if that process is gone)")

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)  # before closing: nobody can take a lock on the old file after
        finally:
            os.close(self.fd)  # drops the flock
            self.fd = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.release()

