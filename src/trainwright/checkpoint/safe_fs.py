"""The filesystem layer every trainer write goes through: writes that degrade cleanly, deletes that never leave the
directory being written, reads that never open anything but regular files, and names made safe to use as paths.

* ``write_atomic(path, data, what=...)``: writes a temp sibling, fsyncs it and renames it over ``path``, so a reader
  sees the old file or the new one, never half of one. A full disk or an I/O error (``ENOSPC``, ``EDQUOT``, ``EIO``,
  ``EFBIG``) leaves the old file as it was, logs ONE warning per kind of file (``what``) naming what was not written,
  and returns False; any other error is raised.
* ``AppendLog``: an append-only line file (``metrics.jsonl``) written one whole line per ``write(2)``; a line that
  cannot be written completely is cut off again, so earlier lines are never damaged and no partial line remains.
* ``disk_errors_degrade(what)``: a decorator for tracker callbacks: a disk error inside becomes one warning.
* ``remove_in(root, rel)`` / ``remove_tree(path)``: never follow a symlink; never delete outside ``root``.
* ``regular_files(root)``: the files of a directory tree, refusing (by name, without opening it) anything that is
  not a regular file: a FIFO, a socket or a device would block or never end when read.
* ``safe_relpath(name)``: a user-given name (``run_name``, a trial name) as a relative path that stays inside
  the directory it is joined to.
"""
from __future__ import annotations

import errno
import functools
import logging
import os
import re
import shutil
import stat
import uuid
from typing import Any

logger = logging.getLogger("trainwright")

# errors of a full or failing disk: the run goes on without the file
DISK_ERRNOS = frozenset(e for e in (errno.ENOSPC, getattr(errno, "EDQUOT", None), errno.EIO, errno.EFBIG) if e)
_warned: set[str] = set()


def disk_error(e: BaseException | None) -> OSError | None:
    """The OSError of a full/failing disk in ``e`` or the exceptions it was raised from (trackers wrap them)."""
    seen = 0
    while e is not None and seen < 8:
        if isinstance(e, OSError) and e.errno in DISK_ERRNOS:
            return e
        e = e.__cause__ or e.__context__
        seen += 1
    return None


def describe(e: OSError) -> str:
    name = errno.errorcode.get(e.errno, str(e.errno)) if e.errno is not None else type(e).__name__
    return f"[{name}] {e.strerror or e}"


def warn_once(what: str, message: str) -> None:
    """Log ``message`` as a warning the first time this process fails to write ``what``."""
    if what in _warned:
        return
    _warned.add(what)
    logger.warning(message)


def reset_warnings() -> None:
    """Forget which kinds were warned about (a new training run warns again)."""
    _warned.clear()


def _not_written(what: str, path: str, e: OSError, consequence: str) -> None:
    warn_once(what, f"Could not write {what} ({path}): {describe(e)}. It was not written; {consequence} The run "
                    "goes on; free disk space to have it written again. (This warning is shown once.)")


def _temp_path(path: str) -> str:
    d, name = os.path.split(os.path.abspath(path))
    return os.path.join(d, f".{name}.trainwright-write-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def write_atomic(path: Any, data: bytes | str, *, what: str | None = None, degrade: bool = True,
                 fsync: bool = True) -> bool:
    """Replace ``path`` with ``data`` atomically. Returns True when written, False when a disk error was degraded
    (one warning per ``what``; the previous file, if any, is unchanged). ``degrade=False`` raises instead."""
    path = os.fspath(path)
    what = what or os.path.basename(path)
    if isinstance(data, str):
        data = data.encode("utf-8")
    tmp = _temp_path(path)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
        try:
            _write_all(fd, data)
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)  # replaces a symlink at path itself, never the file it points to
        return True
    except OSError as e:
        _unlink_quietly(tmp)
        if not degrade or disk_error(e) is None:
            raise
        _not_written(what, path, e, "its previous version, if any, is unchanged.")
        return False


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


class AppendLog:
    """An append-only file of lines. Each line goes to the disk in whole ``write`` calls; if the disk refuses part
    of it, the file is cut back to where the line started, so the file holds whole lines only. A disk error is
    one warning (per file and run) and the line is dropped; later lines are tried again."""

    def __init__(self, path: Any, what: str | None = None) -> None:
        self.path = os.fspath(path)
        self.what = what or os.path.basename(self.path)
        self._fd: int | None = None
        self.dropped = 0
        self._warned = False

    def _open(self) -> int:
        if self._fd is None:
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
            self._fd = os.open(self.path, flags, 0o644)
        return self._fd

    def write_line(self, line: str) -> bool:
        data = (line.rstrip("\n") + "\n").encode("utf-8")
        start = None
        try:
            fd = self._open()
            start = os.lseek(fd, 0, os.SEEK_END)
            _write_all(fd, data)
            return True
        except OSError as e:
            if start is not None and self._fd is not None:
                try:
                    os.ftruncate(self._fd, start)  # no partial line: the next line starts cleanly
                except OSError:
                    pass
            if disk_error(e) is None:
                raise
            self.dropped += 1
            if not self._warned:
                self._warned = True
                logger.warning("Could not write %s (%s): %s. This line and any later ones the disk refuses are "
                               "not written (earlier lines are intact); training goes on. (This warning is shown "
                               "once.)", self.what, self.path, describe(disk_error(e)))
            return False

    def close(self) -> None:
        if self._fd is not None:
            try:
                os.close(self._fd)
            finally:
                self._fd = None


def disk_errors_degrade(what: str) -> Any:
    """Decorate a callback method: a full/failing disk inside it (also wrapped by the tracker's own exception)
    becomes one warning naming ``what``; training goes on. Other errors propagate unchanged."""
    def wrap(fn):
        @functools.wraps(fn)
        def inner(self, *args, **kwargs):
            try:
                return fn(self, *args, **kwargs)
            except Exception as e:
                cause = disk_error(e)
                if cause is None:
                    raise
                warn_once(what, f"Could not write {what}: {describe(cause)}. Its records from here on may be "
                                "missing; training goes on. (This warning is shown once.)")
                return None
        return inner
    return wrap


# ----------------------------------------------------------------------------------------------------- deleting
def _inside(root: str, rel: str) -> str | None:
    """root/rel if no component of rel is a symlink, '..' or absolute, else None (nothing is followed)."""
    rel = rel.replace("\\", "/")
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    if not parts or os.path.isabs(rel) or ".." in parts:
        return None
    current = root
    for part in parts[:-1]:
        current = os.path.join(current, part)
        try:
            if not stat.S_ISDIR(os.lstat(current).st_mode):  # a symlink to a directory is not followed
                return None
        except OSError:
            return None
    return os.path.join(current, parts[-1])


def remove_in(root: Any, rel: str) -> bool:
    """Delete the file ``root/rel`` (a symlink there is removed itself, never its target). Returns False and
    deletes nothing when ``rel`` leaves ``root`` or passes through a symlink or a non-directory."""
    full = _inside(os.fspath(root), rel)
    if full is None:
        return False
    try:
        mode = os.lstat(full).st_mode
    except OSError:
        return False
    if stat.S_ISDIR(mode):
        return False
    os.unlink(full)
    return True


def remove_tree(path: Any) -> None:
    """Delete a directory tree without following symlinks (a symlink is unlinked, its target untouched)."""
    path = os.fspath(path)
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return
    if not stat.S_ISDIR(mode):
        _unlink_quietly(path)
        return
    shutil.rmtree(path, ignore_errors=True)  # unlinks symlinks inside, never descends into them


# ----------------------------------------------------------------------------------------------------- reading
_KINDS = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISDIR, "a directory"))


def file_kind(mode: int) -> str:
    for test, name in _KINDS:
        if test(mode):
            return name
    return "not a regular file"


def non_regular(full: str) -> str | None:
    """None if ``full`` is a regular file (a symlink counts if it points to one); else what it is, in words.
    Uses lstat/stat only: nothing is opened."""
    try:
        st = os.lstat(full)
        if stat.S_ISLNK(st.st_mode):
            try:
                st = os.stat(full)
            except OSError:
                return "a broken symlink"
            if not stat.S_ISREG(st.st_mode):
                return f"a symlink to {file_kind(st.st_mode)}"
            return None
    except OSError as e:
        return f"unreadable ({describe(e)})"
    return None if stat.S_ISREG(st.st_mode) else file_kind(st.st_mode)


def regular_files(root: str, *, skip_dir: Any = None, refuse: Any = None) -> list[str]:
    """Relative paths ('/'-separated) of the files under ``root``; a symlinked directory is not descended.
    ``skip_dir(name)`` leaves out sub-directories. Every entry that is not a regular file is passed to
    ``refuse(rel, kind)`` (which raises); with ``refuse=None`` such entries are skipped."""
    out = []
    for d, subdirs, names in os.walk(root):
        if skip_dir is not None:
            subdirs[:] = [s for s in subdirs if not skip_dir(s)]
        for name in sorted(names) + [s for s in subdirs if os.path.islink(os.path.join(d, s))]:
            full = os.path.join(d, name)
            rel = os.path.relpath(full, root).replace(os.sep, "/")
            kind = non_regular(full)
            if kind is None:
                out.append(rel)
            elif refuse is not None and not kind.startswith("a symlink to a directory"):
                refuse(rel, kind)
    return out


def open_regular(full: str, mode: str = "rb") -> Any:
    """Open a file for reading only if it is a regular file (O_NONBLOCK, then checked with fstat, so a FIFO
    swapped in after the check cannot block). Raises OSError(EINVAL) naming what it is otherwise."""
    fd = os.open(full, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, f"not a regular file ({file_kind(st.st_mode)})", full)
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, mode)
    except BaseException:
        os.close(fd)
        raise


# ----------------------------------------------------------------------------------------------------- names
_CONTROL = re.compile(r"[\x00-\x1f]")


def safe_relpath(name: Any, default: str = "run") -> str:
    """``name`` as a relative path that cannot leave the directory it is joined to: split at ``/`` and ``\\``,
    without empty, ``.`` and ``..`` parts (so without a root either), control characters as ``_``; ``default``
    if nothing is left. ``"group/run"`` stays ``group/run``; ``"../../x"`` -> ``x``; ``"/abs/p"`` -> ``abs/p``."""
    parts = []
    for part in re.split(r"[\\/]+", str(name)):
        part = _CONTROL.sub("_", part).strip()
        if os.name == "nt":
            part = part.replace(":", "_")  # "C:" would make os.path.join start over at a drive
        if part not in ("", ".", ".."):
            parts.append(part[:200])
    return os.path.join(*parts) if parts else default
