"""Put a version kept in the trash back in place, as the newest version of its path.

Every replaced or deleted file is kept in `<root>/.hasync-trash/<UTC stamp>-<run id>/<path>` (trash.py).
Restoring copies the chosen version (the trash keeps it), to a temp file beside the path, with its mode and
owner; the file now at the path, if any, goes to the trash like any replaced file; the restored file gets
the current time as its mtime, so the next sync carries it to the other side as an edit (an edit beats a
delete, and a same-time edit on the other side is a conflict: nothing is lost either way).  Everything goes
through O_NOFOLLOW directory fds, as the sync's own writes do.
"""

from __future__ import annotations

import os
import stat
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from . import fsutil
from .paths import TRASH_DIR, split
from .trash import STAMP_FORMAT, Trash

_OPEN = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC


class NothingToRestore(Exception):
    """The trash holds no version of that path (at or before the time asked for)."""


@dataclass(frozen=True)
class Version:
    """One kept version: its trash folder, when it was trashed, its name there (name or name.N), its stat."""

    stamp: str
    trashed_at: datetime
    name: bytes
    size: int
    mtime_ns: int


def versions(root: str, rel: bytes) -> list[Version]:
    """Every version of `rel` in the root's trash, oldest first."""
    head, name = split(rel)
    found = []
    root_fd = fsutil.open_root(root)
    try:
        try:
            trash_fd = fsutil.open_dir(root_fd, TRASH_DIR)
        except FileNotFoundError:
            return []
        try:
            for stamp in sorted(os.listdir(trash_fd)):
                try:
                    when = datetime.strptime(stamp[:16], STAMP_FORMAT).replace(tzinfo=UTC)
                    folder = fsutil.open_dir(trash_fd, stamp.encode() + (b"/" + head if head else b""))
                except (ValueError, OSError):
                    continue
                try:
                    for entry in sorted(map(os.fsencode, os.listdir(folder))):
                        if entry == name or (entry.startswith(name + b".") and entry[len(name) + 1 :].isdigit()):
                            st = os.stat(entry, dir_fd=folder, follow_symlinks=False)
                            if stat.S_ISREG(st.st_mode):
                                found.append(Version(stamp, when, entry, st.st_size, st.st_mtime_ns))
                finally:
                    os.close(folder)
        finally:
            os.close(trash_fd)
    finally:
        os.close(root_fd)
    return found


def choose(found: list[Version], at: datetime | None) -> Version:
    """The newest version trashed at or before `at` (None: the newest of all)."""
    eligible = [v for v in found if at is None or v.trashed_at <= at]
    if not eligible:
        raise NothingToRestore(
            "no version in the trash" + (f" trashed at or before {at:%Y-%m-%d %H:%M:%S} UTC" if at else "")
        )
    return eligible[-1]


def restore(root: str, rel: bytes, version: Version, run_stamp: bytes, preserve_owner: bool) -> tuple[int, int | None]:
    """Put `version` at `rel` (the current file, if any, into the trash under `run_stamp`).  Returns (bytes
    copied, size of the file it replaced or None)."""
    head, name = split(rel)
    root_fd = fsutil.open_root(root)
    folders = fsutil.FolderFds(root_fd)
    trash = Trash(folders, run_stamp)
    try:
        kept_fd = fsutil.open_dir(root_fd, TRASH_DIR + b"/" + version.stamp.encode() + (b"/" + head if head else b""))
        try:
            sfd = os.open(version.name, _OPEN, dir_fd=kept_fd)
        finally:
            os.close(kept_fd)
        dfd = fsutil.open_dir(root_fd, head, create_mode=0o755)
        try:
            st = os.fstat(sfd)
            tmp = b".hasync-tmp-restore-" + str(os.getpid()).encode()
            out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dfd)
            try:
                copied = fsutil.copy_data(sfd, out, expected=st.st_size, sparse=True)
                if preserve_owner:
                    os.fchown(out, st.st_uid, st.st_gid)
                os.fchmod(out, stat.S_IMODE(st.st_mode))
                now = time.time_ns()
                os.utime(out, ns=(now, now))  # the newest version: the next sync carries it over
                os.fsync(out)
            except BaseException:
                os.close(out)
                os.unlink(tmp, dir_fd=dfd)
                raise
            os.close(out)
            try:
                current = os.stat(name, dir_fd=dfd, follow_symlinks=False)
            except FileNotFoundError:
                current = None
            if current is None:
                fsutil.rename_noreplace(tmp, name, dfd, dfd)
            elif stat.S_ISREG(current.st_mode) or stat.S_ISLNK(current.st_mode):
                trash.keep_then_replace(dfd, name, rel, tmp)
            else:
                os.unlink(tmp, dir_fd=dfd)
                raise IsADirectoryError(f"{rel.decode(errors='replace')} is a folder now; not replaced")
            return copied, current.st_size if current is not None else None
        finally:
            os.close(dfd)
            os.close(sfd)
    finally:
        trash.close()
        folders.close()
        os.close(root_fd)
