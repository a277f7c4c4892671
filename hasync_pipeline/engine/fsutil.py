"""Small, safe filesystem primitives built on directory file descriptors.

Every write the engine makes goes through a directory fd that was opened component by component with
O_NOFOLLOW, so a folder swapped for a symlink (say to /etc) during a run cannot redirect it.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
from collections.abc import Callable

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_libc = ctypes.CDLL(None, use_errno=True)
_RENAME_NOREPLACE = 1
AT_FDCWD = -100


class UnsafePathError(OSError):
    """A path component is a symlink or not a directory: we refuse to go through it."""


def open_root(path: str | bytes) -> int:
    """Open a pair root (the root itself may be reached through symlinks: it is configuration)."""
    return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


def open_dir(root_fd: int, rel: bytes, create_mode: int | None = None) -> int:
    """Open `rel` below `root_fd` one component at a time, never following a symlink.

    With `create_mode`, missing directories are created (mode `create_mode`).  Raises UnsafePathError when
    a component exists but is a symlink or a non-directory.
    """
    fd = os.dup(root_fd)
    if not rel:
        return fd
    try:
        for comp in rel.split(b"/"):
            try:
                nfd = os.open(comp, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if create_mode is None:
                    raise
                try:
                    os.mkdir(comp, create_mode, dir_fd=fd)
                except FileExistsError:
                    pass
                nfd = os.open(comp, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise UnsafePathError(
                        exc.errno,
                        f"'{comp.decode('utf-8', 'backslashreplace')}' "
                        "is a symlink or not a directory; refusing to go through it",
                    ) from None
                raise
            os.close(fd)
            fd = nfd
        return fd
    except BaseException:
        os.close(fd)
        raise


def chmod_dir(dir_fd: int, mode: int, st: os.stat_result) -> None:
    """fchmod a folder, unless that would silently drop a set-gid bit the kernel gave it: a user outside
    the folder's group loses the bit on any chmod, and with it the group new files inherit there."""
    if st.st_mode & 0o7777 == mode:
        return
    if st.st_mode & stat.S_ISGID and os.geteuid() != 0 and st.st_gid not in (os.getegid(), *os.getgroups()):
        return
    os.fchmod(dir_fd, mode)


def rename_noreplace(name: bytes, new_name: bytes, src_dir_fd: int, dst_dir_fd: int) -> None:
    """rename() that fails with EEXIST instead of replacing; falls back to link+unlink where the
    filesystem has no RENAME_NOREPLACE (e.g. NFS)."""
    if _libc.renameat2(src_dir_fd, name, dst_dir_fd, new_name, _RENAME_NOREPLACE) == 0:
        return
    err = ctypes.get_errno()
    if err not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        raise OSError(err, os.strerror(err))
    os.link(name, new_name, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd, follow_symlinks=False)
    os.unlink(name, dir_fd=src_dir_fd)


def syncfs(fd: int) -> None:
    """Write back every dirty page of the filesystem holding `fd` (one call per batch instead of an
    fsync per file)."""
    if _libc.syncfs(fd) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"syncfs failed: {os.strerror(err)}")


def free_bytes(fd: int) -> tuple[int, int]:
    """(bytes available to us, total bytes) of the filesystem holding `fd`."""
    st = os.fstatvfs(fd)
    return st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize


class CopyCancelled(Exception):
    """The copy was stopped half-way (the run is being interrupted)."""


def copy_data(
    src_fd: int, dst_fd: int, cancelled: Callable[[], bool] = lambda: False, expected: int | None = None
) -> int:
    """Copy src to dst until EOF (or until `expected` bytes: the caller re-checks the size, which saves a
    syscall per file); in-kernel where possible.  Returns the number of bytes copied.  `cancelled` is
    polled every 64 MiB so an interrupted run does not wait for a huge file."""
    copied = 0
    chunk = 64 << 20
    try:
        while expected is None or copied < expected:
            if cancelled():
                raise CopyCancelled("copy interrupted")
            n = os.copy_file_range(src_fd, dst_fd, chunk)
            if n == 0:
                return copied
            copied += n
        return copied
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EBADF):
            raise
    while expected is None or copied < expected:  # read/write fallback, going on where the fast path stopped
        if cancelled():
            raise CopyCancelled("copy interrupted")
        buf = os.read(src_fd, 1 << 20)
        if not buf:
            return copied
        view = memoryview(buf)
        while view:
            written = os.write(dst_fd, view)
            view = view[written:]
        copied += len(buf)
    return copied
