"""Writing files: atomically (a reader never sees half of one), and never readable by others where
they hold patient data.

The permission rule of a store lives here (``StoreModes``): by default its folder and every folder
in it are 0700, every file 0600, whatever the process umask (a JupyterHub node's usual 022 would let
every user of the machine read the DICOM files and the index). Several Unix users sharing one store
folder name a group (``c.DicomWeb.store_group``): folders are then 2770 (setgid, so what is created
inside inherits the group) and files 0660, owned by that group; never world-readable. Files and
folders are created with these modes (a umask can only take bits away, never add them), so nothing
is ever readable by others, not even for a moment.
"""

from __future__ import annotations

import logging
import os
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, cast

log = logging.getLogger("dicomweb_nb.store")

PRIVATE_FILE_MODE = 0o600
PRIVATE_DIR_MODE = 0o700


def write_atomically(path: str | os.PathLike[str], data: bytes, *, mode: int | None = None) -> None:
    """Write ``data`` to a temporary file beside ``path``, fsync it, rename it over ``path``, fsync the folder.

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
    # The rename is durable only once the directory entry is: without this, a power cut can leave
    # the old content (or no file) behind a write the caller was told had happened.
    fsync_directory(path.parent)


def fsync_directory(directory: str | os.PathLike[str]) -> None:
    """Make the entries of ``directory`` (files created, renamed or removed in it) durable.

    Best effort where the platform or filesystem cannot fsync a directory (it then has no such cache)."""
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


@dataclass(frozen=True)
class StoreModes:
    """The modes of what a store creates on local disk: owner-only, or shared with ``group``."""

    group: str | None = None

    @property
    def dir_mode(self) -> int:
        return 0o2770 if self.group else PRIVATE_DIR_MODE

    @property
    def file_mode(self) -> int:
        return 0o660 if self.group else PRIVATE_FILE_MODE

    def _gid(self) -> int | None:
        if not self.group:
            return None
        import grp

        try:
            return grp.getgrnam(self.group).gr_gid
        except KeyError:
            if self.group.isdigit():
                return int(self.group)
            raise ValueError(f"store group {self.group!r} does not exist on this machine") from None

    def check(self) -> None:
        """Raise ValueError now (at start-up) for a group that does not exist."""
        self._gid()

    def make_dir(self, path: str | os.PathLike[str]) -> Path:
        """Create ``path`` and any missing parents with the store's folder mode; existing ones are left."""
        path = Path(path)
        missing = []
        current = path
        while not current.is_dir():
            missing.append(current)
            if current.parent == current:
                break
            current = current.parent
        for folder in reversed(missing):
            try:
                os.mkdir(folder, self.dir_mode)
            except FileExistsError:
                if not folder.is_dir():
                    raise
                continue
            self._apply(folder, self.dir_mode)
        return path

    def secure_root(self, path: str | os.PathLike[str]) -> Path:
        """The root folder of a store: created, or, if it exists and is open to more than the store's
        mode allows, tightened (and logged). The files and folders already in an old store stay as
        they are, out of reach behind it."""
        path = self.make_dir(path)
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & ~self.dir_mode & 0o777:
            try:
                self._apply(path, self.dir_mode)
            except PermissionError as exc:
                log.warning("store folder %s is open to other users (mode %04o) and cannot be tightened: %s", path, mode, exc)
            else:
                log.warning("store folder %s was open to other users of this machine (mode %04o); now %04o",
                            path, mode, self.dir_mode)
        return path

    def open_file(self, path: str | os.PathLike[str], mode: str = "wb") -> BinaryIO:
        """``open(path, mode)`` for writing bytes, creating the file with the store's file mode."""
        if "b" not in mode:
            raise ValueError(f"open_file writes bytes: mode must contain b, not {mode!r}")
        flags = os.O_CREAT | os.O_CLOEXEC | (os.O_RDWR if "+" in mode else os.O_WRONLY)
        if "w" in mode:
            flags |= os.O_TRUNC
        elif "a" in mode:
            flags |= os.O_APPEND
        elif "x" in mode:
            flags |= os.O_EXCL
        else:
            raise ValueError(f"open_file writes: mode must contain w, a or x, not {mode!r}")
        fd = os.open(path, flags, self.file_mode)
        try:
            if self.group:
                self.fix_fd(fd)
            return cast(BinaryIO, os.fdopen(fd, mode))
        except BaseException:
            os.close(fd)
            raise

    def create_file(self, path: str | os.PathLike[str]) -> None:
        """Create an empty file with the store's mode unless it exists (an SQLite database before
        SQLite creates it: its -wal and -shm files then take the same mode)."""
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, self.file_mode)
        except FileExistsError:
            return
        try:
            if self.group:
                self.fix_fd(fd)
        finally:
            os.close(fd)

    def fix_file(self, path: str | os.PathLike[str]) -> None:
        """Give an existing file the store's mode (and group): one written by someone else's code."""
        self._apply(Path(path), self.file_mode)

    def fix_fd(self, fd: int) -> None:
        os.fchmod(fd, self.file_mode)
        gid = self._gid()
        if gid is not None:
            try:
                os.fchown(fd, -1, gid)
            except PermissionError:
                pass

    def _apply(self, path: Path, mode: int) -> None:
        gid = self._gid()
        if gid is not None:
            try:
                os.chown(path, -1, gid)
            except PermissionError:  # not a member: the setgid folder gave the group already
                pass
        # mkdir and umask may have dropped bits (setgid among them): set them explicitly.
        os.chmod(path, mode)


OWNER_ONLY = StoreModes()


def open_private(path: str | os.PathLike[str], mode: str = "wb") -> BinaryIO:
    """``open(path, mode)`` for writing bytes, creating the file owner-only (0600) if it does not exist."""
    return OWNER_ONLY.open_file(path, mode)
