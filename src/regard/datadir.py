"""The data directory is private to the user that runs regard: folders 0700, files 0600.

It holds biometric templates (``regard.db``, ``index/``), access keys (``keys.sqlite3``,
``master.key``), the audit log (``audit/``), the review queue (``review.sqlite3``) and the
policy (``policy.toml``). Every folder and file regard creates there is given its mode
explicitly (``chmod`` after creation, so the umask cannot widen it); SQLite's ``-wal``,
``-shm`` and ``-journal`` files take the mode of their database file, which regard creates
0600 before SQLite opens it.

:func:`secure` is the start-up check (run when the key store or the SQLite store opens a data
directory, so by ``regard serve`` and every command that uses one): it takes the group and other
permission bits off the directory and off each of regard's own files and folders in it (and
everything inside those folders) that has them (fix and log: one warning on the
``regard.datadir`` logger per path changed). Other files in the directory are left alone;
symbolic links are neither followed nor changed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600
#: Permission bits that must never be set on anything in the data directory.
OTHERS = 0o077

log = logging.getLogger("regard.datadir")


def _tighten(path: Path) -> int | None:
    """Take the group/other bits off ``path`` (not a link); its old mode when it changed."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:  # removed meanwhile (a temporary file)
        return None
    if stat.S_ISLNK(st.st_mode) or not st.st_mode & OTHERS:
        return None
    old = stat.S_IMODE(st.st_mode)
    try:
        os.chmod(path, old & ~OTHERS)
    except FileNotFoundError:
        return None
    except OSError as exc:  # not ours to change: say so, leave it
        log.warning("regard: cannot make %s private (mode %o): %s", path, old, exc)
        return None
    return old


def private_dir(path: Path) -> Path:
    """``mkdir -p path``; ``path`` itself is 0700 when created here (parents keep their modes)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        path.mkdir(mode=DIR_MODE)
    except FileExistsError:
        pass
    else:
        os.chmod(path, DIR_MODE)  # the umask applies to mkdir, not to chmod
        return path
    old = _tighten(path)
    if old is not None:
        log.warning("regard: %s was mode %o; made private (%o)", path, old, old & ~OTHERS)
    return path


def private_file(path: Path) -> Path:
    """Create ``path`` empty with mode 0600 if it does not exist; make an existing one private."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        restrict(path)
        return path
    try:
        os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)
    return path


def restrict(path: Path) -> None:
    """Take the group/other bits off a file or folder regard has just written (silently)."""
    _tighten(Path(path))


def open_private(path: Path, flags: int) -> int:
    """``os.open(path, flags | O_CREAT, 0o600)`` whose result is 0600 whatever the umask."""
    fd = os.open(path, flags | os.O_CREAT, FILE_MODE)
    try:
        st = os.fstat(fd)
        if st.st_mode & OTHERS:
            os.fchmod(fd, stat.S_IMODE(st.st_mode) & ~OTHERS)
    except BaseException:
        os.close(fd)
        raise
    return fd


#: What regard keeps at the top of a data directory (SQLite's companions and temporary files
#: included); the folders among them are checked with everything in them.
OWN_FILES = ("regard.db", "keys.sqlite3", "review.sqlite3", "master.key", "policy.toml", "policy.tmp")
OWN_DIRS = ("audit", "index")


def _own(name: str) -> bool:
    return name in OWN_DIRS or name.startswith(OWN_FILES)


def secure(data_dir: Path) -> list[Path]:
    """The start-up check: make ``data_dir`` and what regard keeps in it private; the paths changed.

    Only regard's own entries (:data:`OWN_FILES`, :data:`OWN_DIRS` and what is in those folders)
    are changed, so a data directory pointed at a folder holding other things leaves them alone.
    """
    root = Path(data_dir)
    if not root.is_dir():
        return []
    changed: list[Path] = []
    try:
        entries = sorted(p for p in root.iterdir() if _own(p.name))
    except OSError:
        entries = []
    paths = [root]
    for entry in entries:
        paths.append(entry)
        if entry.name in OWN_DIRS and entry.is_dir() and not entry.is_symlink():
            paths.extend(_walk(entry))
    for path in paths:
        old = _tighten(path)
        if old is not None:
            log.warning("regard: %s was mode %o; made private (%o)", path, old, old & ~OTHERS)
            changed.append(path)
    return changed


def _walk(root: Path) -> list[Path]:
    out: list[Path] = []
    with contextlib.suppress(OSError):
        for folder, dirs, files in os.walk(root, followlinks=False):
            base = Path(folder)
            out.extend(base / d for d in dirs)
            out.extend(base / f for f in files)
    return out
