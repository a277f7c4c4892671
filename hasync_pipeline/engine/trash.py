"""The trash: every replaced or deleted destination file, kept (by rename or hard link, never a copy) in
`<root>/.hasync-trash/<run stamp>/<relative path>` for a retention period, so any change can be undone."""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

from . import fsutil
from .paths import TRASH_DIR, join, mount_of, split

STAMP_FORMAT = "%Y%m%dT%H%M%SZ"


def new_stamp(run_id: str, retain_days: float, now: datetime | None = None) -> bytes | None:
    """The run's trash folder name; None when nothing is to be kept (retain_days 0)."""
    if retain_days <= 0:
        return None
    now = now or datetime.now(UTC)
    return f"{now.strftime(STAMP_FORMAT)}-{run_id[:12]}".encode()


class Trash:
    """One per process (not thread-safe).  Keeps the trash folder it used last open: operations come grouped
    by folder, so it is opened once per folder, not once per file, through the destination's kept folders
    (`folders`), which hold its parents: a sibling's trash folder is one openat away.

    With no stamp (--trash-retain-days 0, "delete for real") nothing is kept: a replaced file is simply
    renamed over and a deleted one unlinked, rather than kept and purged at the end of the same run."""

    def __init__(self, folders: fsutil.FolderFds, stamp: bytes | None, mounts: Sequence[bytes] = ()):
        self.folders, self.mounts = folders, mounts
        self.base = TRASH_DIR + b"/" + stamp if stamp is not None else None
        self._open: tuple[bytes, int] | None = None

    def _dir(self, head: bytes) -> int:
        """The trash folder for files of folder `head`: on the same filesystem (a rename cannot leave it), so
        below a mount point inside the destination, in that mount's own `.hasync-trash`."""
        assert self.base is not None, "nothing is kept with no stamp"
        if self._open is None or self._open[0] != head:
            self.close()
            mount = mount_of(self.mounts, head) if self.mounts else b""
            inside = head[len(mount) :].lstrip(b"/")
            where = join(mount, self.base + (b"/" + inside if inside else b""))
            fd = self.folders.open(where, create_mode=0o700)
            self._open = (head, fd)
        return self._open[1]

    def close(self) -> None:
        if self._open is not None:
            os.close(self._open[1])
            self._open = None

    def move(self, dir_fd: int, name: bytes, rel: bytes) -> None:
        """Move `name` (a file or link) into the trash."""
        if self.base is None:
            os.unlink(name, dir_fd=dir_fd)
            return
        _into(name, dir_fd, self._dir(split(rel)[0]), fsutil.rename_noreplace)

    def keep_then_replace(self, dir_fd: int, name: bytes, rel: bytes, new_name: bytes) -> None:
        """Put the current `name` in the trash and `new_name` in its place.  With a hard link the real name
        never disappears for a reader; where links are not supported, two renames."""
        if self.base is None:
            os.rename(new_name, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            return
        tfd = self._dir(split(rel)[0])
        try:
            kept = _into(name, dir_fd, tfd, _hard_link)
            linked = True
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EMLINK, errno.EXDEV):
                raise
            kept = _into(name, dir_fd, tfd, fsutil.rename_noreplace)
            linked = False
        try:
            os.rename(new_name, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except OSError:
            if not linked:  # put the old version back where it was
                os.rename(kept, name, src_dir_fd=tfd, dst_dir_fd=dir_fd)
            raise


def _hard_link(name: bytes, new_name: bytes, src_dir_fd: int, dst_dir_fd: int) -> None:
    os.link(name, new_name, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd, follow_symlinks=False)


def _into(name: bytes, dir_fd: int, trash_fd: int, place: Callable[[bytes, bytes, int, int], None]) -> bytes:
    """Put `name` into the trash folder with `place` (rename or link), never over a version already there
    (the same path trashed twice in one trash folder keeps both: name, name.1, name.2...).  Returns its name
    in the trash."""
    for n in range(1000):
        kept = name if n == 0 else name + b".%d" % n
        try:
            place(name, kept, dir_fd, trash_fd)
            return kept
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "1000 versions of this name in one trash folder")


def purge(root: str, retain_days: float, now: datetime | None = None, mounts: Sequence[bytes] = ()) -> list[str]:
    """Delete trash folders older than `retain_days` (0: all of them), the root's and those of the mount
    points inside it.  Returns the folders removed.

    Reached through directory fds without following a symlink: a `.hasync-trash` that is a symlink (to
    anywhere) raises UnsafePathError and nothing is deleted; a stamp folder that is a link is skipped."""
    now = now or datetime.now(UTC)
    removed: list[str] = []
    root_fd = fsutil.open_root(root)
    try:
        for mount in (b"", *mounts):
            removed += _purge_one(root_fd, join(mount, TRASH_DIR), retain_days, now)
    finally:
        os.close(root_fd)
    return removed


def _purge_one(root_fd: int, trash_rel: bytes, retain_days: float, now: datetime) -> list[str]:
    try:
        trash_fd = fsutil.open_dir(root_fd, trash_rel)
    except FileNotFoundError:
        return []
    removed: list[str] = []
    try:
        for stamp in os.listdir(trash_fd):
            try:
                made = datetime.strptime(stamp[:16], STAMP_FORMAT).replace(tzinfo=UTC)
            except ValueError:
                continue  # not ours: leave it
            if retain_days <= 0 or now - made > timedelta(days=retain_days):
                try:
                    shutil.rmtree(stamp, dir_fd=trash_fd)  # fd-based: never follows a symlink
                except OSError:
                    continue  # a link, or gone meanwhile: left as it is
                removed.append(stamp)
    finally:
        os.close(trash_fd)
    return removed
