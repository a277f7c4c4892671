"""The file operations themselves: create folders, stage copies, commit them, delete into the trash.

Crash safety without an fsync per file: every copy is first written to a temp name in its destination
folder (`.hasync-tmp-*`); the caller then makes ONE syncfs() for the whole batch, and only after it are the
temp files renamed over their real names.  A crash at any point leaves each real name holding either the
old or the new complete file; stray temp files are removed by the next run.  Replaced and deleted files go
to the trash.  Every path is reached through O_NOFOLLOW directory fds (fsutil.FolderFds: each folder opened
once, from its nearest open ancestor).

`FileOps` works on groups of operations that share a parent folder (one directory open per group) and
reports each outcome as a plain tuple through `emit`, so it can run in the calling process or in a forked
worker (see workers.py).
"""

from __future__ import annotations

import errno
import itertools
import os
import secrets
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from . import fsutil, xattrs
from .paths import TMP_PREFIX, display, split
from .plan import COPY, RENAME_SRC, Op
from .trash import Trash
from .walk import DIR, FILE, LINK, Entry

_FILE_OPEN = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
_TMP_OPEN = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_KIND_OF_MODE = {stat.S_IFREG: FILE, stat.S_IFDIR: DIR, stat.S_IFLNK: LINK}

# (op index, ok, error or None, bytes transferred, started, ended) - cheap to pickle between processes
# the destination entry's (inode, ctime, mode, uid, gid) after an operation: what the journal records for it
# (folders keep no ctime: it moves whenever their contents do)
Ident = tuple[int, int, int, int, int]
# (op index, ok, error or None, bytes, started, ended, Ident or None)
Outcome = tuple[int, bool, "str | None", int, float, float, "Ident | None"]


def ident_of(st: os.stat_result) -> Ident:
    folder = stat.S_ISDIR(st.st_mode)
    return st.st_ino, 0 if folder else st.st_ctime_ns, st.st_mode & 0o7777, st.st_uid, st.st_gid


T = TypeVar("T")


@dataclass(frozen=True)
class Preserve:
    """What a copy keeps besides content, mode and mtime (rsync -o -g, -X -A, -S)."""

    owner: bool = field(default_factory=lambda: os.geteuid() == 0)  # only root can give files away
    xattrs: bool = True
    sparse: bool = True


class Changed(Exception):
    """A file changed between plan and apply: the operation is not done (the next run re-plans it)."""


def describe_error(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.errno:
        return f"{errno.errorcode.get(exc.errno, exc.errno)}: {exc.strerror or exc}"
    return str(exc)


def _same(st: os.stat_result, expected: Entry) -> bool:
    """Is the entry on disk still the one the plan saw (kind, inode, and for files and links size and mtime)?"""
    if _KIND_OF_MODE.get(stat.S_IFMT(st.st_mode)) != expected.kind:
        return False
    if expected.ino and st.st_ino != expected.ino:
        return False
    return expected.kind == DIR or (st.st_size == expected.size and st.st_mtime_ns == expected.mtime_ns)


def _lstat(name: bytes, dir_fd: int) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def unlink_quietly(name: bytes, dir_fd: int) -> None:
    try:
        os.unlink(name, dir_fd=dir_fd)
    except OSError:
        pass


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class FileOps:
    """Applies operations below two open roots.  Not thread-safe: one instance per process."""

    def __init__(
        self,
        ops: list[Op],
        src_root: str,
        dest_root: str,
        trash_stamp: bytes | None,
        preserve: Preserve,
        emit: Callable[[Outcome], None],
        cancelled: Callable[[], bool] = lambda: False,
        mounts: tuple[bytes, ...] = (),
    ):
        self.ops, self.emit, self.cancelled = ops, emit, cancelled
        self.preserve = preserve
        self.src_fd = fsutil.open_root(src_root)
        self.dest_fd = fsutil.open_root(dest_root)
        self.src_dirs, self.dest_dirs = fsutil.FolderFds(self.src_fd), fsutil.FolderFds(self.dest_fd)
        self.trash = Trash(self.dest_dirs, trash_stamp, mounts)
        self.staged: list[tuple[int, bytes, float]] = []  # temp files written and not yet renamed
        tmp_prefix = TMP_PREFIX + secrets.token_hex(4).encode() + b"-"
        self._tmp_names = (tmp_prefix + b"%d" % n for n in itertools.count())
        self._uid, self._gid, self._umask = os.geteuid(), os.getegid(), _current_umask()

    def close(self) -> None:
        self.trash.close()
        self.src_dirs.close()
        self.dest_dirs.close()
        os.close(self.src_fd)
        os.close(self.dest_fd)

    def _dirs(self, root_fd: int) -> fsutil.FolderFds:
        return self.src_dirs if root_fd == self.src_fd else self.dest_dirs

    def _xattrs_from_source(self, rel: bytes, dst_fd: int) -> None:
        head, name = split(rel)
        pfd = self.src_dirs.open(head)
        try:
            sfd = os.open(name, xattrs.OPEN_ANY, dir_fd=pfd) if name else os.dup(pfd)
        finally:
            os.close(pfd)
        try:
            xattrs.sync_fd(sfd, dst_fd)
        finally:
            os.close(sfd)

    def _writable(self, dir_fd: int) -> None:
        """Make a read-only destination folder we own writable for us (not as root: root writes anyway);
        folders.py puts its mode back at the end of the run."""
        if self._uid == 0:
            return
        st = os.fstat(dir_fd)
        if st.st_mode & 0o300 != 0o300 and st.st_uid == self._uid:
            os.fchmod(dir_fd, st.st_mode & 0o7777 | 0o300)

    # ---- reporting -------------------------------------------------------------------------------
    def _ok(self, idx: int, started: float, nbytes: int = 0, ident: Ident | None = None) -> None:
        self.emit((idx, True, None, nbytes, started, time.time(), ident))

    def _fail(self, idx: int, exc: BaseException, started: float | None = None) -> None:
        now = time.time()
        self.emit((idx, False, describe_error(exc), 0, started or now, now, None))

    # ---- folders ---------------------------------------------------------------------------------
    def mkdir(self, idx: int) -> None:
        op = self.ops[idx]
        head, name = split(op.path)
        started = time.time()
        try:
            pfd = self.dest_dirs.open(head, create_mode=0o755)
            try:
                self._writable(pfd)
                try:
                    os.mkdir(name, op.src_entry.mode & 0o777 | 0o700, dir_fd=pfd)
                except FileExistsError:
                    pass  # made meanwhile: the open below checks it is a real directory
                dfd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=pfd)
                try:
                    if self.preserve.owner:
                        os.fchown(dfd, op.src_entry.uid, op.src_entry.gid)
                    # writable for us while it is filled (set-gid at once: what goes in inherits the group);
                    # folders.py gives it its final mode and mtime after its contents
                    fsutil.chmod_dir(dfd, op.src_entry.mode | 0o700, os.fstat(dfd))
                    if self.preserve.xattrs:
                        self._xattrs_from_source(op.path, dfd)
                    after = ident_of(os.fstat(dfd))
                finally:
                    os.close(dfd)
            finally:
                os.close(pfd)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                exc = fsutil.UnsafePathError(exc.errno, "exists in destination but is not a directory")
            return self._fail(idx, exc, started)
        self._ok(idx, started, ident=after)

    # ---- renames, moves and metadata (few: run in the parent, one by one) ----------------------------------
    def rename_in_place(self, idx: int) -> None:
        """A conflict's losing version gets its conflict name, on its own side (RENAME_SRC / RENAME_DEST)."""
        op = self.ops[idx]
        on_src = op.action == RENAME_SRC
        expected = op.src_entry if on_src else op.dest_entry
        assert op.new_path is not None
        self._rename(
            idx, self.src_fd if on_src else self.dest_fd, op.path, op.new_path, expected, ident=False, numbered=True
        )

    def move(self, idx: int) -> None:
        """Rename a destination entry to where the source's moved to (parents made as needed)."""
        op = self.ops[idx]
        assert op.new_path is not None
        self._rename(idx, self.dest_fd, op.path, op.new_path, op.dest_entry, ident=True)

    def _rename(
        self, idx: int, root_fd: int, old: bytes, new: bytes, expected: Entry, ident: bool, numbered: bool = False
    ) -> None:
        """Rename, never over an existing entry.  `numbered`: a conflict copy whose name is taken (a second
        conflict on the same path within the same second) takes name-2.ext, name-3.ext... instead."""
        (old_head, old_name), (new_head, new_name) = split(old), split(new)
        started = time.time()
        try:
            dirs = self._dirs(root_fd)
            ofd = dirs.open(old_head)
            try:
                nfd = dirs.open(new_head, create_mode=0o755)
                try:
                    if root_fd == self.dest_fd:
                        self._writable(ofd)
                        self._writable(nfd)
                    current = _lstat(old_name, ofd)
                    if current is None or not _same(current, expected):
                        raise Changed("changed since the plan; left for the next run")
                    if expected.kind == DIR:
                        dirs.forget(old)  # kept fds below it would lead to its new place
                    for n in range(1, 1000 if numbered else 2):
                        try:
                            target = new_name if n == 1 else numbered_name(new_name, n)
                            fsutil.rename_noreplace(old_name, target, ofd, nfd)
                            break
                        except FileExistsError:
                            if not numbered:
                                raise
                    st = os.stat(target, dir_fd=nfd, follow_symlinks=False)
                finally:
                    os.close(nfd)
            finally:
                os.close(ofd)
        except FileExistsError:
            return self._fail(idx, Changed(f"{display(new)} exists already; left for the next run"), started)
        except (OSError, Changed) as exc:
            return self._fail(idx, exc, started)
        self._ok(idx, started, ident=ident_of(st) if ident else None)

    def meta(self, idx: int) -> None:
        """Mode (and, as root, owner) of a destination entry whose content did not change."""
        op = self.ops[idx]
        head, name = split(op.path)
        started = time.time()
        src = op.src_entry
        try:
            pfd = self.dest_dirs.open(head)
            try:
                current = _lstat(name, pfd)
                if current is None or not _same(current, op.dest_entry):
                    raise Changed("destination changed since the plan; left for the next run")
                if self.preserve.owner:
                    os.chown(name, src.uid, src.gid, dir_fd=pfd, follow_symlinks=False)
                if src.kind != LINK:  # a link's own mode (and xattrs) mean nothing on Linux
                    os.chmod(name, src.mode, dir_fd=pfd)
                    if self.preserve.xattrs:
                        efd = os.open(name, xattrs.OPEN_ANY, dir_fd=pfd)
                        try:
                            self._xattrs_from_source(op.path, efd)
                        finally:
                            os.close(efd)
                st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
            finally:
                os.close(pfd)
        except (OSError, Changed) as exc:
            return self._fail(idx, exc, started)
        self._ok(idx, started, ident=ident_of(st))

    def hardlink(self, idx: int) -> None:
        """A second name of a source inode: a link to its twin in the destination (which must hold the
        source's size and mtime), put in place like a copy (a replaced version goes to the trash)."""
        op = self.ops[idx]
        assert op.new_path is not None
        (twin_head, twin_name), head = split(op.new_path), split(op.path)[0]
        src = op.src_entry
        started = time.time()
        try:
            tfd = self.dest_dirs.open(twin_head)
            try:
                dfd = self.dest_dirs.open(head, create_mode=0o755)
                try:
                    self._writable(dfd)
                    twin = _lstat(twin_name, tfd)
                    seen = (twin.st_mode & 0o170000, twin.st_size, twin.st_mtime_ns) if twin is not None else None
                    if seen != (stat.S_IFREG, src.size, src.mtime_ns):
                        raise Changed(
                            f"its hard-linked twin {display(op.new_path)} is not in place; left for the next run"
                        )
                    tmp, _ = self._new_tmp(
                        lambda t: os.link(twin_name, t, src_dir_fd=tfd, dst_dir_fd=dfd, follow_symlinks=False)
                    )
                    try:
                        ident = self._commit_one(op, tmp, dfd)
                    except BaseException:
                        unlink_quietly(tmp, dfd)
                        raise
                finally:
                    os.close(dfd)
            finally:
                os.close(tfd)
        except (OSError, Changed) as exc:
            return self._fail(idx, exc, started)
        self._ok(idx, started, ident=ident)

    def rmdir(self, idx: int) -> None:
        head, name = split(self.ops[idx].path)
        started = time.time()
        try:
            self.dest_dirs.forget(self.ops[idx].path)
            pfd = self.dest_dirs.open(head)
            try:
                self._writable(pfd)
                os.rmdir(name, dir_fd=pfd)
            finally:
                os.close(pfd)
        except OSError as exc:
            why: BaseException = exc
            if exc.errno == errno.ENOTEMPTY:
                why = Changed("directory is not empty (it holds files not in the plan); kept")
            return self._fail(idx, why, started)
        self._ok(idx, started)

    # ---- per folder group ------------------------------------------------------------------------
    def _open_pair(self, head: bytes, indices: list[int], with_src: bool) -> tuple[int, int] | None:
        """(source folder fd or -1 when not asked for, destination folder fd), or None: all failed."""
        try:
            dfd = self.dest_dirs.open(head, create_mode=0o755 if with_src else None)
            try:
                self._writable(dfd)
            except OSError:
                os.close(dfd)
                raise
        except OSError as exc:
            for idx in indices:
                self._fail(idx, exc)
            return None
        if not with_src:
            return -1, dfd
        try:
            return self.src_dirs.open(head), dfd
        except OSError as exc:
            os.close(dfd)
            for idx in indices:
                self._fail(idx, exc)
            return None

    def stage_group(self, head: bytes, indices: list[int]) -> None:
        """Write temp files for the copies and symlinks of one folder."""
        fds = self._open_pair(head, indices, with_src=True)
        if fds is None:
            return
        sfd, dfd = fds

        def stage(idx: int, op: Op, started: float) -> None:
            tmp = (self._stage_copy if op.action == COPY else self._stage_link)(op, sfd, dfd)
            self.staged.append((idx, tmp, started))

        try:
            self._each(indices, stage)
        finally:
            os.close(sfd)
            os.close(dfd)

    def _each(self, indices: list[int], do: Callable[[int, Op, float], None]) -> None:
        """do(idx, op, started) for each operation until cancelled; a failure fails that operation only."""
        for idx in indices:
            if self.cancelled():
                return
            started = time.time()
            try:
                do(idx, self.ops[idx], started)
            except (OSError, Changed, fsutil.CopyCancelled) as exc:
                self._fail(idx, exc, started)

    def _new_tmp(self, create: Callable[[bytes], T]) -> tuple[bytes, T]:
        while True:
            tmp = next(self._tmp_names)
            try:
                return tmp, create(tmp)
            except FileExistsError:
                continue  # a leftover of an older run with the same name: take the next one

    def _stage_copy(self, op: Op, sfd_dir: int, dfd_dir: int) -> bytes:
        name = split(op.path)[1]
        sfd = os.open(name, _FILE_OPEN, dir_fd=sfd_dir)
        try:
            mode = op.src_entry.mode
            tmp, dfd = self._new_tmp(lambda t: os.open(t, _TMP_OPEN, mode, dir_fd=dfd_dir))
            try:
                try:
                    copied = fsutil.copy_data(sfd, dfd, self.cancelled, op.src_entry.size, self.preserve.sparse)
                    st = os.fstat(sfd)  # the source must still be exactly what the plan saw
                    if (
                        not stat.S_ISREG(st.st_mode)
                        or copied != st.st_size
                        or (st.st_size, st.st_mtime_ns) != (op.src_entry.size, op.src_entry.mtime_ns)
                    ):
                        raise Changed("source changed during the copy; left for the next run")
                    if self.preserve.owner and (st.st_uid, st.st_gid) != (self._uid, self._gid):
                        os.fchown(dfd, st.st_uid, st.st_gid)
                        os.fchmod(dfd, mode)  # chown clears set-id bits
                    elif mode & self._umask:
                        os.fchmod(dfd, mode)
                    if self.preserve.xattrs:  # after the mode: an ACL sets the group bits (its mask) itself
                        xattrs.sync_fd(sfd, dfd)
                    os.utime(dfd, ns=(st.st_atime_ns, st.st_mtime_ns))
                finally:
                    os.close(dfd)  # on NFS, close() is where a full disk shows up
            except BaseException:
                unlink_quietly(tmp, dfd_dir)
                raise
            return tmp
        finally:
            os.close(sfd)

    def _stage_link(self, op: Op, sfd_dir: int, dfd_dir: int) -> bytes:
        name = split(op.path)[1]
        target = op.src_entry.link
        if target is None or os.readlink(name, dir_fd=sfd_dir) != target:
            raise Changed("source symlink changed since the plan; left for the next run")
        tmp, _ = self._new_tmp(lambda t: os.symlink(target, t, dir_fd=dfd_dir))
        try:
            if self.preserve.owner:
                os.chown(tmp, op.src_entry.uid, op.src_entry.gid, dir_fd=dfd_dir, follow_symlinks=False)
            os.utime(tmp, ns=(op.src_entry.mtime_ns, op.src_entry.mtime_ns), dir_fd=dfd_dir, follow_symlinks=False)
        except BaseException:
            unlink_quietly(tmp, dfd_dir)
            raise
        return tmp

    def commit_group(self, head: bytes, items: list[tuple[int, bytes | None, float]]) -> None:
        """Rename staged temp files over their real names (tmp None: a touch, only the mtime is set)."""
        fds = self._open_pair(head, [idx for idx, _, _ in items], with_src=False)
        if fds is None:
            return
        dfd = fds[1]
        try:
            for idx, tmp, started in items:
                if self.cancelled():  # interrupted: drop what is not renamed yet
                    if tmp is not None:
                        unlink_quietly(tmp, dfd)
                    continue
                try:
                    ident = self._commit_one(self.ops[idx], tmp, dfd)
                except (OSError, Changed) as exc:
                    if tmp is not None:
                        unlink_quietly(tmp, dfd)
                    self._fail(idx, exc, started)
                    continue
                self._ok(idx, started, self.ops[idx].copy_bytes, ident)
        finally:
            os.close(dfd)

    def _commit_one(self, op: Op, tmp: bytes | None, dfd: int) -> Ident:
        """Put the staged file in place; returns what it is there, for the journal."""
        name = split(op.path)[1]
        if op.dest is None:
            assert tmp is not None, "a new entry is always staged"
            try:
                fsutil.rename_noreplace(tmp, name, dfd, dfd)  # fails, rather than replaces, if one appeared
            except FileExistsError:
                raise Changed("appeared in the destination since the plan; left for the next run") from None
        else:
            current = _lstat(name, dfd)
            if current is None or not _same(current, op.dest_entry):
                raise Changed("destination changed since the plan; left for the next run")
            if tmp is None:
                os.utime(name, ns=(current.st_atime_ns, op.src_entry.mtime_ns), dir_fd=dfd, follow_symlinks=False)
            else:
                self.trash.keep_then_replace(dfd, name, op.path, tmp)
        return ident_of(os.stat(name, dir_fd=dfd, follow_symlinks=False))

    def delete_group(self, head: bytes, indices: list[int]) -> None:
        """Move files that are not in the source into the trash, if they are still what the plan saw."""
        fds = self._open_pair(head, indices, with_src=False)
        if fds is None:
            return
        dfd = fds[1]

        def delete(idx: int, op: Op, started: float) -> None:
            name = split(op.path)[1]
            current = _lstat(name, dfd)
            if current is None:
                raise Changed("already gone from the destination")
            if not _same(current, op.dest_entry):
                raise Changed("destination changed since the plan; kept")
            self.trash.move(dfd, name, op.path)
            self._ok(idx, started)

        try:
            self._each(indices, delete)
        finally:
            os.close(dfd)

    def discard_staged(self) -> None:
        """Remove the temp files of copies that will not be committed (interrupted, lease lost)."""
        for idx, tmp, _ in self.staged:
            try:
                dfd = self.dest_dirs.open(split(self.ops[idx].path)[0])
            except OSError:
                continue
            unlink_quietly(tmp, dfd)
            os.close(dfd)
        self.staged = []


def numbered_name(name: bytes, n: int) -> bytes:
    """name.ext -> name-N.ext (a name without an extension, or a dot-file: name-N)."""
    stem, dot, ext = name.rpartition(b".")
    if not stem or not dot:
        return name + b"-%d" % n
    return stem + b"-%d." % n + ext


def cleanup_leftovers(root: str, leftovers: list[bytes]) -> list[str]:
    """Remove temp files an interrupted run left behind; returns the ones that could not be removed."""
    problems = []
    root_fd = fsutil.open_root(root)
    try:
        for rel in leftovers:
            head, name = split(rel)
            try:
                dfd = fsutil.open_dir(root_fd, head)
                try:
                    os.unlink(name, dir_fd=dfd)
                finally:
                    os.close(dfd)
            except FileNotFoundError:
                pass
            except OSError as exc:
                problems.append(f"{display(rel)}: {describe_error(exc)}")
    finally:
        os.close(root_fd)
    return problems
