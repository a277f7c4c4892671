"""Extended attributes and POSIX ACLs, kept as `rsync -XA` keeps them (ACLs are the `system.posix_acl_*`
xattrs, so one mechanism carries both).

Copies and metadata updates make the destination's set equal the source's: names the source lacks are
removed too (a default ACL of the destination folder otherwise leaves an ACL the source file never had).
What this process may not set (`trusted.*` and `security.*` when not root) or the destination filesystem
cannot hold (an NFSv3 mount) is skipped, as rsync does without --fake-super.  Cost: two listxattr calls per
file copied (~1 us each locally), plus a get/set per attribute present.  Symlinks carry none on Linux.
"""

from __future__ import annotations

import errno
import os

from . import fsutil
from .paths import split

_CANNOT = (errno.EPERM, errno.EOPNOTSUPP, errno.EACCES, errno.EINVAL)
OPEN_ANY = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def read_all(fd: int) -> dict[str, bytes]:
    """Every xattr of an open file or folder this process can read ({} where the filesystem has none)."""
    try:
        names = os.listxattr(fd)
    except OSError as exc:
        if exc.errno in (errno.EOPNOTSUPP, errno.ENOTSUP):
            return {}
        raise
    found = {}
    for name in names:
        try:
            found[name] = os.getxattr(fd, name)
        except OSError as exc:
            if exc.errno not in (errno.ENODATA, *_CANNOT):  # gone meanwhile, or not ours to read
                raise
    return found


def sync_fd(src_fd: int, dst_fd: int) -> None:
    """Give `dst_fd` the xattrs (and so the ACLs) of `src_fd`, and no others."""
    want = read_all(src_fd)
    have = read_all(dst_fd) if want or _has_any(dst_fd) else {}
    for name in have.keys() - want.keys():
        _quietly(os.removexattr, dst_fd, name)
    for name, value in want.items():
        if have.get(name) != value:
            _quietly(os.setxattr, dst_fd, name, value)


def _has_any(fd: int) -> bool:
    try:
        return bool(os.listxattr(fd))
    except OSError as exc:
        if exc.errno in (errno.EOPNOTSUPP, errno.ENOTSUP):
            return False
        raise


def _quietly(call: object, *args: object) -> None:
    try:
        call(*args)  # type: ignore[operator]
    except OSError as exc:
        if exc.errno not in (*_CANNOT, errno.ENODATA, errno.ENOTSUP):
            raise


def open_entry(root_fd: int, rel: bytes) -> int:
    """An fd on the file or folder at `rel` below `root_fd` (never through a symlink), for its xattrs."""
    head, name = split(rel)
    if not name:
        return os.dup(root_fd)
    pfd = fsutil.open_dir(root_fd, head)
    try:
        return os.open(name, OPEN_ANY, dir_fd=pfd)
    finally:
        os.close(pfd)


def differ(src_root: str, dest_root: str, rel: bytes) -> bool:
    """Do the two sides' entries at `rel` carry different xattrs?  (Unreadable: no, the next run looks again.)"""
    try:
        fds = []
        try:
            for root in (src_root, dest_root):
                root_fd = fsutil.open_root(root)
                try:
                    fds.append(open_entry(root_fd, rel))
                finally:
                    os.close(root_fd)
            return read_all(fds[0]) != read_all(fds[1])
        finally:
            for fd in fds:
                os.close(fd)
    except OSError:
        return False
