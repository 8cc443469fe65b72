"""Writing files: atomically (a reader never sees half of one), and owner-only where they hold
patient data.

The permission rule of a store lives here: its folder and every folder in it are 0700, every file
0600, whatever the process umask (a JupyterHub node's usual 022 would let every user of the machine
read the DICOM files and the index). Files and folders are created with these modes (a umask can only
take bits away, never add them), so nothing is ever readable by others, not even for a moment.
"""

from __future__ import annotations

import logging
import os
import stat
import tempfile
from pathlib import Path
from typing import BinaryIO, cast

log = logging.getLogger("dicomweb_nb.store")

PRIVATE_FILE_MODE = 0o600
PRIVATE_DIR_MODE = 0o700


def write_atomically(path: str | os.PathLike[str], data: bytes, *, mode: int | None = None) -> None:
    """Write ``data`` to a temporary file beside ``path``, fsync it, then rename it over ``path``.

    ``mode`` sets the permissions before any byte is written (0o600 for files holding secrets).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    try:
        if mode is not None:
            os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        try:
            os.unlink(temp)
        except OSError:
            pass
        raise


def private_folder(path: str | os.PathLike[str]) -> Path:
    """Create ``path`` and any missing parent as owner-only folders (0700); existing ones are left."""
    path = Path(path)
    missing: list[Path] = []
    current = path
    while not current.is_dir():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for folder in reversed(missing):
        try:
            os.mkdir(folder, PRIVATE_DIR_MODE)
        except FileExistsError:
            if not folder.is_dir():
                raise
    return path


def open_private(path: str | os.PathLike[str], mode: str = "wb") -> BinaryIO:
    """``open(path, mode)`` for writing bytes, creating the file owner-only (0600) if it does not exist."""
    if "b" not in mode:
        raise ValueError(f"open_private writes bytes: mode must contain b, not {mode!r}")
    flags = os.O_CREAT | os.O_CLOEXEC | (os.O_RDWR if "+" in mode else os.O_WRONLY)
    if "w" in mode:
        flags |= os.O_TRUNC
    elif "a" in mode:
        flags |= os.O_APPEND
    elif "x" in mode:
        flags |= os.O_EXCL
    else:
        raise ValueError(f"open_private writes: mode must contain w, a or x, not {mode!r}")
    fd = os.open(path, flags, PRIVATE_FILE_MODE)
    try:
        return cast(BinaryIO, os.fdopen(fd, mode))
    except BaseException:
        os.close(fd)
        raise


def create_private_file(path: str | os.PathLike[str]) -> None:
    """Create an empty owner-only file unless it exists (e.g. an SQLite database before SQLite
    creates it: its -wal and -shm files then take the same mode)."""
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, PRIVATE_FILE_MODE))
    except FileExistsError:
        pass


def make_private(path: str | os.PathLike[str]) -> None:
    """Make an existing file owner-only (a file written by someone else's code before it is stored)."""
    os.chmod(path, PRIVATE_FILE_MODE)


def secure_store_folder(path: str | os.PathLike[str]) -> Path:
    """The root folder of a store: created 0700, or, if it exists and others may enter it, tightened
    to 0700 (and logged). The files and folders already in an old store stay as they are, out of
    reach behind it."""
    path = private_folder(path)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        try:
            os.chmod(path, PRIVATE_DIR_MODE)
        except PermissionError as exc:
            log.warning("store folder %s is open to other users (mode %04o) and cannot be tightened: %s", path, mode, exc)
        else:
            log.warning("store folder %s was open to other users of this machine (mode %04o); now %04o (owner only)",
                        path, mode, PRIVATE_DIR_MODE)
    return path
