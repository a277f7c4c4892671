"""Small, safe filesystem primitives built on directory file descriptors.

Every write the engine makes goes through a directory fd that was opened component by component with
O_NOFOLLOW, so a folder swapped for a symlink (say to /etc) during a run cannot redirect it.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
import threading
from collections import OrderedDict
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
            nfd = _step_into(fd, comp, create_mode)
            os.close(fd)
            fd = nfd
        return fd
    except BaseException:
        os.close(fd)
        raise


def _step_into(fd: int, comp: bytes, create_mode: int | None) -> int:
    """Open folder `comp` in `fd`, creating it first (mode `create_mode`) when missing and asked to."""
    try:
        return open_child(fd, comp)
    except FileNotFoundError:
        if create_mode is None:
            raise
    try:
        os.mkdir(comp, create_mode, dir_fd=fd)
    except FileExistsError:
        pass  # made meanwhile: opening it checks it is a real folder
    return open_child(fd, comp)


class FolderFds:
    """Folders below one root, each opened once and kept (the `size` most recently used): a folder is reached
    from its nearest kept ancestor, one openat per component not yet open, instead of down its whole path from
    the root again for every group of files, every trash folder, every xattr read (on NFS each component is
    a round trip).  Hands out its own fd (a dup: the caller closes it), so closing one kept for later never
    pulls an fd from under a caller; thread-safe (new folders are made by several threads).

    A kept fd follows its folder if that is renamed: `forget()` it when this run renames or removes one."""

    def __init__(self, root_fd: int, size: int = 64):
        self.root_fd, self.size = root_fd, size
        self._kept: OrderedDict[bytes, int] = OrderedDict()
        self._lock = threading.Lock()

    def open(self, rel: bytes, create_mode: int | None = None) -> int:
        """An fd on folder `rel` (made, with its missing parents, when `create_mode` is given); yours to close."""
        with self._lock:
            base = rel
            while base and base not in self._kept:
                base = base.rpartition(b"/")[0]
            fd = os.dup(self._kept[base] if base else self.root_fd)
            if base:
                self._kept.move_to_end(base)
        try:
            here = base
            for comp in rel[len(base) :].lstrip(b"/").split(b"/") if rel != base else ():
                nfd = _step_into(fd, comp, create_mode)
                os.close(fd)
                fd = nfd
                here = here + b"/" + comp if here else comp
                self._keep(here, fd)
            return fd
        except BaseException:
            os.close(fd)
            raise

    def _keep(self, rel: bytes, fd: int) -> None:
        with self._lock:
            if rel in self._kept:
                return
            self._kept[rel] = os.dup(fd)
            while len(self._kept) > self.size:
                os.close(self._kept.popitem(last=False)[1])

    def forget(self, rel: bytes) -> None:
        """Folder `rel` was renamed or removed: close what is kept of it and below (its path leads elsewhere)."""
        below = rel + b"/"
        with self._lock:
            gone = [k for k in self._kept if k == rel or k.startswith(below)]
            fds = [self._kept.pop(k) for k in gone]
        for fd in fds:
            os.close(fd)

    def close(self) -> None:
        with self._lock:
            fds, self._kept = list(self._kept.values()), OrderedDict()
        for fd in fds:
            os.close(fd)


def open_child(dir_fd: int, name: bytes) -> int:
    """Open the folder `name` in the folder `dir_fd`, never through a symlink (UnsafePathError)."""
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise UnsafePathError(
                exc.errno,
                f"'{name.decode('utf-8', 'backslashreplace')}' "
                "is a symlink or not a directory; refusing to go through it",
            ) from None
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


SPARSE_MIN = 128 << 10  # smaller files hold too few blocks for holes to matter


class CopyCancelled(Exception):
    """The copy was stopped half-way (the run is being interrupted)."""


def copy_data(
    src_fd: int,
    dst_fd: int,
    cancelled: Callable[[], bool] = lambda: False,
    expected: int | None = None,
    sparse: bool = False,
) -> int:
    """Copy src to dst until EOF (or until `expected` bytes: the caller re-checks the size, which saves a
    syscall per file); in-kernel where possible.  Returns the number of bytes copied.  `cancelled` is
    polled every 64 MiB so an interrupted run does not wait for a huge file.

    `sparse` (with `expected`): only the data extents are copied (SEEK_DATA/SEEK_HOLE), so holes stay
    holes: a 2 GiB disk image holding 1 MiB of data stays 1 MiB on disk.  A file without holes costs two
    lseek calls more (on NFS 4.2 two round trips), so files under SPARSE_MIN are copied as streams."""
    if sparse and expected and expected >= SPARSE_MIN:
        extents = _data_extents(src_fd, expected)
        if extents is not None:
            for start, end in extents:
                _copy_range(src_fd, dst_fd, start, end, cancelled)
            os.ftruncate(dst_fd, expected)  # a hole at the end
            return expected
    return _copy_stream(src_fd, dst_fd, cancelled, expected)


def _data_extents(fd: int, size: int) -> list[tuple[int, int]] | None:
    """The (start, end) of each data extent of a file with holes; None for a file without (or where the
    filesystem cannot tell): then it is copied as a stream."""
    extents = []
    pos = 0
    try:
        while pos < size:
            try:
                start = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError as exc:
                if exc.errno == errno.ENXIO:  # only a hole from here on
                    break
                raise
            end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
            if start == 0 and end >= size:
                os.lseek(fd, 0, os.SEEK_SET)
                return None  # no holes: the plain stream copy
            extents.append((start, end))
            pos = end
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP):
            raise
        os.lseek(fd, 0, os.SEEK_SET)
        return None
    return extents


def _copy_range(src_fd: int, dst_fd: int, start: int, end: int, cancelled: Callable[[], bool]) -> None:
    """Copy bytes [start, end) to the same offsets, in-kernel where possible."""
    pos = start
    while pos < end:
        if cancelled():
            raise CopyCancelled("copy interrupted")
        want = min(end - pos, 64 << 20)
        try:
            n = os.copy_file_range(src_fd, dst_fd, want, pos, pos)
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EBADF):
                raise
            buf = os.pread(src_fd, min(want, 1 << 20), pos)
            n = len(buf)
            if n:
                _write_all(dst_fd, buf, pos)
        if n == 0:
            return  # the source shrank: the caller's check after the copy says so
        pos += n


def _write_all(fd: int, buf: bytes, pos: int) -> None:
    view = memoryview(buf)
    while view:
        written = os.pwrite(fd, view, pos)
        view, pos = view[written:], pos + written


def _copy_stream(src_fd: int, dst_fd: int, cancelled: Callable[[], bool], expected: int | None) -> int:
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
