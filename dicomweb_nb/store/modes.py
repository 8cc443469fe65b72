"""Who may read a store's files: owner-only by default, or a Unix group that shares the store.

Every directory and file the store creates on local disk goes through ``StoreModes`` (one place
to reconcile with the rest of the package's permission rules). Patient data is never
world-readable: without a group, folders are 0700 and files 0600; with ``group`` (several Unix
users sharing one blob folder, ``c.DicomWeb.store_group``) folders are 2770 (setgid, so what is
created inside inherits the group) and files 0660, owned by that group.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class StoreModes:
    group: str | None = None

    @property
    def dir_mode(self) -> int:
        return 0o2770 if self.group else 0o700

    @property
    def file_mode(self) -> int:
        return 0o660 if self.group else 0o600

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

    def make_dir(self, path: Path) -> None:
        """Create ``path`` and missing parents below an existing folder with the store's mode."""
        missing = []
        current = path
        while not current.exists():
            missing.append(current)
            if current.parent == current:
                break
            current = current.parent
        for folder in reversed(missing):
            try:
                os.mkdir(folder, self.dir_mode)
            except FileExistsError:
                continue
            self._apply(folder, self.dir_mode)

    def fix_file(self, path: Path) -> None:
        """Give a file the store's mode (and group)."""
        self._apply(path, self.file_mode)

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
