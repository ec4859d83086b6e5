"""One training run per ``output_dir``: ``train()`` holds an exclusive lock on it (and checks first that it can
write there: :func:`check_output_dir`).

Two runs writing one ``output_dir`` rotate (delete) each other's checkpoints and interleave their logs. While
``train()`` runs, the process that writes the run's files (rank 0 under torchrun) holds an ``fcntl.flock`` on
``<output_dir>/.trainwright.lock``; the file holds the holder's pid, host and start time, for the message a
second run gets. The kernel drops the lock when its holder exits, however it exits, so a crashed run never leaves
a stale lock (a file left by a crash is only a name to lock: the next run locks it again). The lock is released
and the file removed when ``train()`` returns or raises; a run that locked a file just removed by its holder sees
that the path no longer names its file and locks the new one. Where locking is not available (Windows, a
filesystem without flock) the run goes on unlocked.
"""
from __future__ import annotations

import datetime
import errno
import functools
import json
import logging
import os
import socket
import stat
from typing import Any

from ..errors import ConfigError

logger = logging.getLogger("trainwright")
LOCK_NAME = ".trainwright.lock"


class OutputDirLock:
    def __init__(self, output_dir: Any) -> None:
        self.output_dir = os.fspath(output_dir)
        self.path = os.path.join(self.output_dir, LOCK_NAME)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def _open(self) -> int:
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
        for _ in range(2):
            try:
                fd = os.open(self.path, flags, 0o644)
            except OSError as e:
                if e.errno != errno.ELOOP:  # ELOOP: a symlink was planted there; remove the link, never follow it
                    raise
                os.unlink(self.path)
                continue
            if stat.S_ISREG(os.fstat(fd).st_mode):
                return fd
            os.close(fd)  # a FIFO or the like in its place: remove the entry, make a regular file
            os.unlink(self.path)
        raise OSError(errno.EEXIST, "cannot create a regular lock file", self.path)

    def acquire(self) -> bool:
        """Take the lock (True), or return False where locking is not possible. ConfigError if another run
        holds it."""
        try:
            import fcntl
        except ImportError:
            return False
        try:
            fd = self._open()
        except OSError as e:
            if e.errno not in (errno.EACCES, errno.EROFS, errno.EPERM):  # those: train() names the unwritable dir
                logger.warning("Could not create the lock file %s (%s); training without a lock on output_dir.",
                               self.path, e.strerror or e)
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = _read_holder(fd)
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise ConfigError(
                    f"output_dir={self.output_dir!r} is in use by another training run ({holder}; it holds "
                    f"{self.path}). Two runs in one output_dir delete each other's checkpoints. Use another "
                    "output_dir for this run, or wait until that run has ended.") from None
            logger.warning("Could not lock %s (%s); training without a lock on output_dir.", self.path,
                           e.strerror or e)
            return False
        if not _still_named(fd, self.path):  # its holder removed it between our open and our lock: again
            os.close(fd)
            return self.acquire()
        self._fd = fd
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}
        try:  # who holds it, for the message of a second run; best effort (a full disk must not stop the run)
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        except OSError:
            pass
        return True

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            import fcntl

            if _still_named(self._fd, self.path):
                os.unlink(self.path)  # while still locked: a run that opened it sees it is gone (_still_named)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        except OSError:
            pass
        finally:
            os.close(self._fd)
            self._fd = None


def _still_named(fd: int, path: str) -> bool:
    try:
        mine, named = os.fstat(fd), os.lstat(path)
    except OSError:
        return False
    return (mine.st_dev, mine.st_ino) == (named.st_dev, named.st_ino)


def _read_holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode("utf-8") or "{}")
        return f"process {info['pid']} on host {info['host']}, started {info['started']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "a process that did not record its id"


def holds_output_dir_lock(train: Any) -> Any:
    """Decorates ``Trainer.train``: the writing process locks ``args.output_dir`` for the whole call (re-entrant
    for a subclass whose ``train`` calls ``super().train``) and unlocks it when the call returns or raises."""
    @functools.wraps(train)
    def locked_train(self, *args, **kwargs):
        if getattr(self, "_output_dir_lock", None) is not None or not _writes_files(self):
            return train(self, *args, **kwargs)
        lock = OutputDirLock(self.args.output_dir)
        try:
            os.makedirs(lock.output_dir, exist_ok=True)
        except OSError:
            return train(self, *args, **kwargs)  # train() reports the unusable output_dir
        if not lock.acquire():
            return train(self, *args, **kwargs)
        self._output_dir_lock = lock
        try:
            return train(self, *args, **kwargs)
        finally:
            self._output_dir_lock = None
            lock.release()
    return locked_train


def _writes_files(trainer) -> bool:
    dist = getattr(trainer, "dist", None)
    return dist is None or bool(getattr(dist, "is_main_process", True))


def check_output_dir(out: str) -> None:
    """``output_dir`` is a directory this process can create and write to; else ConfigError naming the fix."""
    if os.path.isfile(out):
        raise ConfigError(f"output_dir={out!r} is a file, not a directory: choose another output_dir.")
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"output_dir={out!r} cannot be created ({e.strerror}): choose a writable directory.") from e
    if not os.access(out, os.W_OK):
        raise ConfigError(f"output_dir={out!r} is not writable: choose a directory you can write to.")
