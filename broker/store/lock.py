"""The data directory's lock: one running node per data directory.

An exclusive ``flock`` on ``DIR/LOCK`` held for as long as the store is open. The kernel
drops it when the process dies (kill -9 included), so a crashed node never leaves a stale
lock behind. The holder writes its pid into the file so a second node can name it.
"""

from __future__ import annotations

import errno
import fcntl
import os

from .base import StoreError, StoreLocked

LOCK_NAME = "LOCK"


class DataDirLock:
    """An exclusive lock on one data directory; ``release`` must be called once acquired."""

    def __init__(self, data_dir: str) -> None:
        self.data_dir = data_dir
        self.path = os.path.join(data_dir, LOCK_NAME)
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock without waiting. Raises StoreLocked (naming the directory and the
        holder's pid) when another process holds it, StoreError when the file cannot be made."""
        try:
            os.makedirs(self.data_dir, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise StoreError(f"cannot use data directory {self.data_dir}: {e.strerror}") from e
        try:
            # flock, not lockf: flock locks belong to the open file, so two stores in one
            # process (tests, NodeThread) exclude each other too.
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = _read_pid(fd)
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                who = f" (pid {holder})" if holder else ""
                raise StoreLocked(f"data directory {self.data_dir} is in use by another mqemu node{who}; "
                                  "stop it or choose another --data-dir") from None
            raise StoreError(f"cannot lock {self.path}: {e.strerror}") from e
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def held(self) -> bool:
        """Whether the lock is still ours: the file at ``path`` is the one we locked. Someone
        removing or replacing it (or the directory going away) means another node may lock it
        now, and the holder must stop (an active/standby pair's keep-alive check)."""
        if self._fd is None:
            return False
        try:
            ours, there = os.fstat(self._fd), os.stat(self.path)
        except OSError:
            return False
        return (ours.st_dev, ours.st_ino) == (there.st_dev, there.st_ino)

    def release(self) -> None:
        if self._fd is not None:
            try:
                os.ftruncate(self._fd, 0)
            except OSError:
                pass
            os.close(self._fd)  # closing the file drops the flock
            self._fd = None


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode().strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None
