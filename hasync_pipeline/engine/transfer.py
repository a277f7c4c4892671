"""Apply a batch of planned operations to the destination.

Crash safety without an fsync per file: every copy is first written to a temp name in its destination
folder (`.hasync-tmp-*`), then ONE syncfs() writes the whole batch back, and only then are the temp files
renamed over their real names.  A crash at any point leaves real names holding either the old or the new
complete file; stray temp files are removed by the next run.  Replaced and deleted files go to the trash.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable

from . import fsutil
from .paths import TMP_PREFIX, display, split
from .plan import COPY, DELETE, MKDIR, RMDIR, SYMLINK, TOUCH, Op
from .trash import Trash
from .walk import DIR, FILE, LINK, Entry

_FILE_OPEN = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
_TMP_OPEN = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_KIND_OF_MODE = {stat.S_IFREG: FILE, stat.S_IFDIR: DIR, stat.S_IFLNK: LINK}


class Changed(Exception):
    """A file changed between plan and apply: the operation is not done (the next run re-plans it)."""


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class OpResult:
    op: Op
    ok: bool
    error: str | None = None
    bytes: int = 0
    started_at: datetime = field(default_factory=utcnow)
    ended_at: datetime | None = None


@dataclass
class ApplyContext:
    src_root: str
    dest_root: str
    trash_stamp: bytes
    workers: int = 4
    preserve_owner: bool = field(default_factory=lambda: os.geteuid() == 0)
    durable: bool = True
    check_lease: Callable[[], None] = lambda: None          # raises when the lease is lost
    on_result: Callable[[OpResult], None] = lambda r: None  # called once per op, from any thread


def describe_error(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.errno:
        return f"{errno.errorcode.get(exc.errno, exc.errno)}: {exc.strerror or exc}"
    return str(exc)


def _same(st: os.stat_result, expected: Entry) -> bool:
    if _KIND_OF_MODE.get(stat.S_IFMT(st.st_mode)) != expected.kind:
        return False
    return expected.kind == DIR or (st.st_size == expected.size and st.st_mtime_ns == expected.mtime_ns)


def _lstat(name: bytes, dir_fd: int) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _unlink_quietly(name: bytes, dir_fd: int) -> None:
    try:
        os.unlink(name, dir_fd=dir_fd)
    except OSError:
        pass


class _Batch:
    def __init__(self, ops: list[Op], ctx: ApplyContext):
        self.ops, self.ctx = ops, ctx
        self.results: list[OpResult] = []
        self.staged: list[tuple[Op, bytes, datetime]] = []   # temp files written, not yet renamed
        self._lock = threading.Lock()
        self._cancelled = threading.Event()  # set when the main thread is interrupted (SIGTERM, lost lease)

    # ---- bookkeeping ---------------------------------------------------------------------------
    def _report(self, result: OpResult) -> None:
        result.ended_at = result.ended_at or utcnow()
        with self._lock:
            self.results.append(result)
            self.ctx.on_result(result)

    def _fail(self, op: Op, exc: BaseException, started: datetime | None = None) -> None:
        self._report(OpResult(op, False, describe_error(exc), started_at=started or utcnow()))

    @staticmethod
    def _by_folder(items: list, path_of: Callable = lambda op: op.path, chunk: int = 64) -> list[tuple[bytes, list]]:
        """Group by parent folder (one directory open per group), cut into chunks for the thread pool."""
        groups: dict[bytes, list] = {}
        for item in items:
            groups.setdefault(split(path_of(item))[0], []).append(item)
        return [(head, v[i:i + chunk]) for head, v in groups.items() for i in range(0, len(v), chunk)]

    def _fail_all(self, ops: list[Op], exc: BaseException) -> None:
        for op in ops:
            self._fail(op, exc)

    def _in_pool(self, fn: Callable[[bytes, list], None], groups: list[tuple[bytes, list]]) -> None:
        if not groups:
            return
        with ThreadPoolExecutor(max_workers=max(1, self.ctx.workers), thread_name_prefix="apply") as pool:
            try:
                for fut in [pool.submit(fn, head, items) for head, items in groups]:
                    fut.result()
            except BaseException:
                self._cancelled.set()  # workers stop at their next file; the pool exit waits for them
                raise

    # ---- the phases ----------------------------------------------------------------------------
    def run(self) -> list[OpResult]:
        self.ctx.check_lease()
        self.src_fd = fsutil.open_root(self.ctx.src_root)
        self.dest_fd = fsutil.open_root(self.ctx.dest_root)
        try:
            self.trash = Trash(self.dest_fd, self.ctx.trash_stamp)
            for op in (o for o in self.ops if o.action == MKDIR):
                self._mkdir(op)
            try:
                self._in_pool(self._stage_folder,
                              self._by_folder([o for o in self.ops if o.action in (COPY, SYMLINK)]))
                if self.staged and self.ctx.durable:
                    fsutil.syncfs(self.dest_fd)
                self.ctx.check_lease()
            except BaseException:
                self._discard(self.staged)
                raise
            commits = self.staged + [(op, None, utcnow()) for op in self.ops if op.action == TOUCH]
            self._in_pool(self._commit_folder, self._by_folder(commits, lambda item: item[0].path))
            self._in_pool(self._delete_folder, self._by_folder([o for o in self.ops if o.action == DELETE]))
            for op in (o for o in self.ops if o.action == RMDIR):
                self._rmdir(op)
        finally:
            os.close(self.src_fd)
            os.close(self.dest_fd)
        return self.results

    def _discard(self, staged: list[tuple[Op, bytes, datetime]]) -> None:
        for op, tmp, t0 in staged:
            try:
                dfd = fsutil.open_dir(self.dest_fd, split(op.path)[0])
            except OSError:
                continue
            _unlink_quietly(tmp, dfd)
            os.close(dfd)

    def _mkdir(self, op: Op) -> None:
        head, name = split(op.path)
        started = utcnow()
        try:
            pfd = fsutil.open_dir(self.dest_fd, head, create_mode=0o755)
            try:
                try:
                    os.mkdir(name, 0o700, dir_fd=pfd)
                except FileExistsError:
                    pass  # made meanwhile (or by a copy that needed it): check it is a real directory below
                dfd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=pfd)
                try:
                    if self.ctx.preserve_owner:
                        os.fchown(dfd, op.src.uid, op.src.gid)
                    os.fchmod(dfd, op.src.mode)
                finally:
                    os.close(dfd)
            finally:
                os.close(pfd)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                exc = fsutil.UnsafePathError(exc.errno, "exists in destination but is not a directory")
            return self._fail(op, exc, started)
        self._report(OpResult(op, True, started_at=started))

    def _stage_folder(self, head: bytes, ops: list[Op]) -> None:
        try:
            sfd = fsutil.open_dir(self.src_fd, head)
        except OSError as exc:
            return self._fail_all(ops, exc)
        try:
            try:
                dfd = fsutil.open_dir(self.dest_fd, head, create_mode=0o755)
            except OSError as exc:
                return self._fail_all(ops, exc)
            try:
                for op in ops:
                    if self._cancelled.is_set():
                        return
                    started = utcnow()
                    try:
                        tmp = (self._stage_copy if op.action == COPY else self._stage_link)(op, sfd, dfd)
                    except (OSError, Changed) as exc:
                        self._fail(op, exc, started)
                        continue
                    with self._lock:
                        self.staged.append((op, tmp, started))
            finally:
                os.close(dfd)
        finally:
            os.close(sfd)

    def _stage_copy(self, op: Op, sfd_dir: int, dfd_dir: int) -> bytes:
        name = split(op.path)[1]
        sfd = os.open(name, _FILE_OPEN, dir_fd=sfd_dir)
        try:
            st = os.fstat(sfd)
            if not stat.S_ISREG(st.st_mode) or (st.st_size, st.st_mtime_ns) != (op.src.size, op.src.mtime_ns):
                raise Changed("source changed since the plan; left for the next run")
            tmp = TMP_PREFIX + secrets.token_hex(8).encode()
            dfd = os.open(tmp, _TMP_OPEN, 0o600, dir_fd=dfd_dir)
            try:
                try:
                    copied = fsutil.copy_data(sfd, dfd, self._cancelled.is_set)
                    after = os.fstat(sfd)
                    if copied != st.st_size or (after.st_size, after.st_mtime_ns) != (st.st_size, st.st_mtime_ns):
                        raise Changed("source changed during the copy; left for the next run")
                    if self.ctx.preserve_owner:
                        os.fchown(dfd, st.st_uid, st.st_gid)
                    os.fchmod(dfd, stat.S_IMODE(st.st_mode))
                    os.utime(dfd, ns=(st.st_atime_ns, st.st_mtime_ns))
                finally:
                    os.close(dfd)  # on NFS, close() is where a full disk shows up
            except BaseException:
                _unlink_quietly(tmp, dfd_dir)
                raise
            return tmp
        finally:
            os.close(sfd)

    def _stage_link(self, op: Op, sfd_dir: int, dfd_dir: int) -> bytes:
        name = split(op.path)[1]
        if os.readlink(name, dir_fd=sfd_dir) != op.src.link:
            raise Changed("source symlink changed since the plan; left for the next run")
        tmp = TMP_PREFIX + secrets.token_hex(8).encode()
        os.symlink(op.src.link, tmp, dir_fd=dfd_dir)
        try:
            if self.ctx.preserve_owner:
                os.chown(tmp, op.src.uid, op.src.gid, dir_fd=dfd_dir, follow_symlinks=False)
            os.utime(tmp, ns=(op.src.mtime_ns, op.src.mtime_ns), dir_fd=dfd_dir, follow_symlinks=False)
        except BaseException:
            _unlink_quietly(tmp, dfd_dir)
            raise
        return tmp

    def _commit_folder(self, head: bytes, items: list[tuple[Op, bytes | None, datetime]]) -> None:
        try:
            dfd = fsutil.open_dir(self.dest_fd, head)
        except OSError as exc:
            return self._fail_all([op for op, _, _ in items], exc)
        try:
            for op, tmp, started in items:
                if self._cancelled.is_set():  # interrupted: drop what is not renamed yet
                    if tmp is not None:
                        _unlink_quietly(tmp, dfd)
                    continue
                try:
                    self._commit_one(op, tmp, dfd)
                except (OSError, Changed) as exc:
                    if tmp is not None:
                        _unlink_quietly(tmp, dfd)
                    self._fail(op, exc, started)
                    continue
                self._report(OpResult(op, True, bytes=op.copy_bytes, started_at=started))
        finally:
            os.close(dfd)

    def _commit_one(self, op: Op, tmp: bytes | None, dfd: int) -> None:
        name = split(op.path)[1]
        current = _lstat(name, dfd)
        if op.dest is None:
            if current is not None:
                raise Changed("appeared in the destination since the plan; left for the next run")
            fsutil.rename_noreplace(tmp, name, dfd, dfd)
            return
        if current is None or not _same(current, op.dest):
            raise Changed("destination changed since the plan; left for the next run")
        if op.action == TOUCH:
            os.utime(name, ns=(current.st_atime_ns, op.src.mtime_ns), dir_fd=dfd, follow_symlinks=False)
        else:
            self.trash.keep_then_replace(dfd, name, op.path, tmp)

    def _delete_folder(self, head: bytes, ops: list[Op]) -> None:
        try:
            dfd = fsutil.open_dir(self.dest_fd, head)
        except OSError as exc:
            return self._fail_all(ops, exc)
        try:
            for op in ops:
                if self._cancelled.is_set():
                    return
                started = utcnow()
                try:
                    current = _lstat(split(op.path)[1], dfd)
                    if current is None:
                        raise Changed("already gone from the destination")
                    if not _same(current, op.dest):
                        raise Changed("destination changed since the plan; kept")
                    self.trash.move(dfd, split(op.path)[1], op.path)
                except (OSError, Changed) as exc:
                    self._fail(op, exc, started)
                    continue
                self._report(OpResult(op, True, started_at=started))
        finally:
            os.close(dfd)

    def _rmdir(self, op: Op) -> None:
        head, name = split(op.path)
        started = utcnow()
        try:
            pfd = fsutil.open_dir(self.dest_fd, head)
            try:
                os.rmdir(name, dir_fd=pfd)
            finally:
                os.close(pfd)
        except OSError as exc:
            if exc.errno == errno.ENOTEMPTY:
                exc = Changed("directory is not empty (it holds files not in the plan); kept")
            return self._fail(op, exc, started)
        self._report(OpResult(op, True, started_at=started))


def apply_batch(ops: list[Op], ctx: ApplyContext) -> list[OpResult]:
    """Apply `ops` (a slice of a plan, in plan order); one result per op.  Per-op failures are results,
    not exceptions; only a lost lease (from ctx.check_lease) or unusable roots raise."""
    return _Batch(ops, ctx).run()


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
