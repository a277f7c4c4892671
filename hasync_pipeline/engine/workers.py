"""Apply one batch of a plan with `workers` processes, keeping the batch crash-safe and fenced.

Sequence: folders are made (here, a level at a time) and re-moded; the copies, touches, files' metadata
changes and deletes are split by folder among the workers; every worker stages its copies as temp files and
reports "staged"; when all have, the parent makes ONE syncfs() and checks the lease, then tells them to go
on (commit renames, touches, metadata, deletes) or to drop their temp files.  Emptied folders are removed
last, here.  Each outcome streams back to the parent, which calls `on_result` (opslog, progress) for it.
"""

from __future__ import annotations

import dataclasses
import os
import select
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from . import fsutil
from .forking import Child, write_frame
from .gcpause import cyclic_gc_paused
from .levels import by_level
from .liveness import DEST, GRACE, SRC, Deadlines
from .paths import split
from .plan import COPY, DELETE, HARDLINK, META, MKDIR, MOVE, RENAME_DEST, RENAME_SRC, RMDIR, SYMLINK, TOUCH, Op
from .ports import Interrupted, LeaseLost
from .transfer import FileOps, Ident, Outcome, Preserve
from .walk import DIR

_GO, _ABORT = b"G", b"A"
# what each part of a worker's share holds (a folder's META is done here, before them: _meta_of_folder)
_SHARE_PARTS = {"stage": (COPY, SYMLINK), "touch": (TOUCH,), "meta": (META,), "delete": (DELETE,)}
_IN_WORKERS = tuple(action for actions in _SHARE_PARTS.values() for action in actions)
_GROUP = 64  # operations per folder group handed to a worker...
_GROUP_BYTES = 64 << 20  # ...or bytes to copy
_FLUSH_EVERY = 256  # outcomes per message from a worker
# below this much work (operations + 64 KiB units copied) on local disks, forking costs more than it saves; across
# a network every operation waits round trips, so any work worth two shares is forked (1% of 5000 files changed
# at 1 ms a request: 50 files inline took 3.3 s, ~65 ms each, one after another)
_FORK_WORTH = 128


@dataclass(slots=True)
class OpResult:
    """The outcome of one operation.  Times are epoch seconds (floats): cheap to make 100k times a run."""

    op: Op
    ok: bool
    error: str | None = None
    bytes: int = 0
    started: float = field(default_factory=time.time)
    ended: float | None = None
    prepared: object = None  # what ApplyContext.prepare made of it, where the operation ran
    ident: Ident | None = None  # what the destination entry is after it: for the journal


@dataclass
class ApplyContext:
    src_root: str
    dest_root: str
    trash_stamp: bytes | None  # None: keep nothing (trash retention 0)
    workers: int = 4
    preserve: Preserve = field(default_factory=Preserve)
    mounts: tuple[bytes, ...] = ()  # mount points inside the destination: each keeps its own trash
    durable: bool = True
    remote: bool = False  # a root is across a network (latency.on_network): even a little work is forked
    check_lease: Callable[[], None] = lambda: None  # raises when the lease is lost
    on_result: Callable[[OpResult], None] = lambda r: None  # once per op, in this process
    # optional, run in the worker that did the operation: lets a caller (the audit trail) do its
    # per-operation formatting on all cores instead of in this one process
    prepare: Callable[[OpResult], object] | None = None
    # raises to stop the batch (e.g. a signal arrived); polled between files and while waiting for workers,
    # because an exception raised by a signal handler can be swallowed (at-fork hooks, finalizers)
    stop_requested: Callable[[], None] = lambda: None
    # called, in whatever process did it, each time a call on the shares returned (a file or a chunk of one
    # copied, a folder made): the run's deadline counts it as progress (liveness.Board)
    beat: Callable[[], None] = lambda: None


@dataclass
class _Share:
    """One worker's part of a batch, as (folder, op indices) groups."""

    stage: list[tuple[bytes, list[int]]] = field(default_factory=list)
    touch: list[tuple[bytes, list[int]]] = field(default_factory=list)
    meta: list[tuple[bytes, list[int]]] = field(default_factory=list)
    delete: list[tuple[bytes, list[int]]] = field(default_factory=list)
    weight: float = 0.0


def _groups(ops: list[Op], actions: tuple[str, ...]) -> list[tuple[bytes, list[int]]]:
    """(folder, op indices) groups of at most _GROUP operations or _GROUP_BYTES copied, so that big files in
    one folder still spread over the workers."""
    by_folder: dict[bytes, list[int]] = {}
    for idx, op in enumerate(ops):
        if op.action in actions and not _meta_of_folder(op):
            by_folder.setdefault(split(op.path)[0], []).append(idx)
    groups = []
    for head, indices in by_folder.items():
        current: list[int] = []
        size = 0
        for idx in indices:
            if current and (len(current) >= _GROUP or size + ops[idx].copy_bytes > _GROUP_BYTES):
                groups.append((head, current))
                current, size = [], 0
            current.append(idx)
            size += ops[idx].copy_bytes
        groups.append((head, current))
    return groups


def _meta_of_folder(op: Op) -> bool:
    """A folder's new mode is set here, before the workers start: set by a worker, a read-only mode could
    land while another worker is writing into that folder."""
    return op.action == META and op.src_entry.kind == DIR


def _split_into_shares(ops: list[Op], workers: int) -> list[_Share]:
    """Greedy balance by weight: one unit per operation plus one per 64 KiB copied."""
    shares = [_Share() for _ in range(max(1, workers))]
    work = [(part, group) for part, actions in _SHARE_PARTS.items() for group in _groups(ops, actions)]

    def weigh(group: tuple[bytes, list[int]]) -> float:
        return sum(1 + ops[i].copy_bytes / 65536 for i in group[1])

    for kind, group in sorted(work, key=lambda item: weigh(item[1]), reverse=True):
        share = min(shares, key=lambda s: s.weight)
        getattr(share, kind).append(group)
        share.weight += weigh(group)
    return [s for s in shares if s.stage or s.touch or s.meta or s.delete]


def _run_share(fileops: FileOps, share: _Share, barrier: Callable[[], bool]) -> None:
    """Stage, wait at the barrier, then commit and delete (or drop the staged files)."""
    for head, indices in share.stage:
        fileops.stage_group(head, indices)
    if not barrier():
        fileops.discard_staged()
        return
    commits: dict[bytes, list[tuple[int, bytes | None, float]]] = {}
    for idx, tmp, started in fileops.staged:
        commits.setdefault(split(fileops.ops[idx].path)[0], []).append((idx, tmp, started))
    for head, indices in share.touch:
        commits.setdefault(head, []).extend((idx, None, time.time()) for idx in indices)
    fileops.staged = []
    for head, items in commits.items():
        fileops.commit_group(head, items)
    for _, indices in share.meta:
        for idx in indices:
            if fileops.cancelled():
                return
            fileops.meta(idx)
    for head, indices in share.delete:
        fileops.delete_group(head, indices)


def _worker_body(ops: list[Op], ctx: ApplyContext, share: _Share) -> Callable[[int, int], None]:
    def body(out_fd: int, in_fd: int) -> None:
        stop = []
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.append(True))
        pending: list[tuple[Outcome, object]] = []
        prepare = ctx.prepare

        def emit(outcome: Outcome) -> None:
            prepared = prepare(_result(ops, outcome)) if prepare is not None else None
            pending.append((outcome, prepared))
            if len(pending) >= _FLUSH_EVERY:
                flush()

        def flush() -> None:
            if pending:
                write_frame(out_fd, ("results", pending[:]))
                pending.clear()

        def barrier() -> bool:
            flush()
            write_frame(out_fd, ("staged",))
            return os.read(in_fd, 1) == _GO  # end of stream (parent gone) counts as abort

        beat = ctx.beat

        def cancelled() -> bool:  # asked between files and between chunks of a file: the shares answered
            beat()
            return bool(stop)

        fileops = FileOps(
            ops,
            ctx.src_root,
            ctx.dest_root,
            ctx.trash_stamp,
            ctx.preserve,
            emit,
            cancelled=cancelled,
            mounts=ctx.mounts,
        )
        try:
            _run_share(fileops, share, barrier)
        finally:
            fileops.discard_staged()
            flush()
            fileops.close()

    return body


class _Applier:
    def __init__(self, ops: list[Op], ctx: ApplyContext):
        self.ops, self.ctx = ops, ctx
        self.results: list[OpResult] = []
        self.reported: set[int] = set()

    def deliver(self, outcome: Outcome, prepared: object = None) -> None:
        result = _result(self.ops, outcome)
        self.reported.add(outcome[0])
        if self.ctx.prepare is not None:
            result.prepared = prepared if prepared is not None else self.ctx.prepare(result)
        self.results.append(result)
        self.ctx.on_result(result)

    def _stop_if_requested(self) -> bool:
        self.ctx.beat()
        self.ctx.stop_requested()
        return False

    def sync_and_check(self, dest_fd: int, anything_staged: bool) -> None:
        if anything_staged and self.ctx.durable:
            fsutil.syncfs(dest_fd)
        self.ctx.check_lease()

    def run(self) -> list[OpResult]:
        self.ctx.check_lease()
        self.ctx.stop_requested()
        local = FileOps(
            self.ops,
            self.ctx.src_root,
            self.ctx.dest_root,
            self.ctx.trash_stamp,
            self.ctx.preserve,
            self.deliver,
            cancelled=self._stop_if_requested,
            mounts=self.ctx.mounts,
        )
        try:
            for idx, op in enumerate(self.ops):  # conflict renames and moves first: they free or take names
                if op.action in (RENAME_SRC, RENAME_DEST):
                    local.rename_in_place(idx)
                elif op.action == MOVE:
                    local.move(idx)
            self._make_folders(local)
            for idx in (i for i, op in enumerate(self.ops) if _meta_of_folder(op)):
                local.meta(idx)
            shares = _split_into_shares(self.ops, self.ctx.workers)
            if len(shares) > 1 and (self.ctx.remote or sum(s.weight for s in shares) >= _FORK_WORTH):
                self._in_children(shares, local.dest_fd)
            else:
                for share in shares:
                    self._inline(local, share)
            for idx in (i for i, op in enumerate(self.ops) if op.action == HARDLINK):  # after their twins
                local.hardlink(idx)
            for idx in (i for i, op in enumerate(self.ops) if op.action == RMDIR):
                local.rmdir(idx)
        finally:
            local.close()
        return self.results

    def _make_folders(self, local: FileOps) -> None:
        """New folders, parents before children, those of one depth on `workers` threads at once (levels.py);
        their outcomes are delivered here, in this thread, in plan order."""
        mkdirs = [i for i, op in enumerate(self.ops) if op.action == MKDIR]
        deliver, beat = local.emit, self.ctx.beat
        outcomes: list[Outcome] = []

        def collect(outcome: Outcome) -> None:  # list.append is atomic: the threads only collect
            outcomes.append(outcome)
            beat()

        local.emit = collect
        try:
            by_level(mkdirs, lambda i: self.ops[i].path.count(b"/"), local.mkdir, self.ctx.workers)
        finally:
            local.emit = deliver
            for outcome in sorted(outcomes, key=lambda o: o[0]):
                deliver(outcome)

    def _inline(self, local: FileOps, share: _Share) -> None:
        def barrier() -> bool:
            try:
                self.sync_and_check(local.dest_fd, bool(local.staged))
            except BaseException:
                local.discard_staged()
                raise
            return True

        try:
            _run_share(local, share, barrier)
        except BaseException:
            local.discard_staged()
            raise

    def _in_children(self, shares: list[_Share], dest_fd: int) -> None:
        children: list[Child] = []
        by_fd: dict[int, Child] = {}
        waiting: set[Child] = set()  # not yet at the barrier
        staged_any = False
        released = False
        try:
            for share in shares:  # inside the try: an interruption here still stops those already started
                child = Child(_worker_body(self.ops, self.ctx, share), stop=signal.SIGTERM)
                children.append(child)
                by_fd[child.reader.fd] = child
                waiting.add(child)
            while by_fd:
                self.ctx.stop_requested()
                ready, _, _ = select.select(list(by_fd), [], [], 0.5)
                for fd in ready:
                    child = by_fd[fd]
                    for kind, *payload in child.reader.read_available():
                        if kind == "results":
                            for outcome, prepared in payload[0]:
                                self.deliver(outcome, prepared)
                        elif kind == "staged":
                            staged_any = True
                            waiting.discard(child)
                    if child.reader.eof:
                        del by_fd[fd]
                        waiting.discard(child)
                if not waiting and not released:
                    released = True
                    self.sync_and_check(dest_fd, staged_any)
                    for child in children:
                        child.send(_GO)
        except BaseException:
            for child in children:  # stop them: drop staged files, stop between files, report what was done
                child.send(_ABORT)
                child.signal(signal.SIGTERM)
            for child in children:  # drain every child, or one blocked on a full pipe is never reaped
                for kind, *payload in child.reader.read_all() if not child.reader.eof else []:
                    if kind == "results":
                        for outcome, prepared in payload[0]:
                            try:
                                self.deliver(outcome, prepared)
                            except Exception:  # noqa: BLE001,S110 - the error already raised is the one to report
                                pass
            raise
        finally:
            statuses = {c.pid: c.reap() for c in children}
        died = [pid for pid, status in statuses.items() if status != 0]
        if died:
            for idx, op in enumerate(self.ops):
                in_a_worker = op.action in _IN_WORKERS and not _meta_of_folder(op)
                if idx not in self.reported and in_a_worker:
                    now = time.time()
                    self.deliver(
                        (idx, False, f"worker process died (pids {died}); left for the next run", 0, now, now, None)
                    )


def _result(ops: list[Op], outcome: Outcome) -> OpResult:
    idx, ok, error, nbytes, started, ended, ident = outcome
    return OpResult(ops[idx], ok, error, nbytes, started, ended, ident=ident)


def apply_batch(ops: list[Op], ctx: ApplyContext) -> list[OpResult]:
    """Apply `ops` (a slice of a plan, in plan order); one result per op.  Per-op failures are results, not
    exceptions; only a lost lease (from ctx.check_lease), an interruption or unusable roots raise."""
    with cyclic_gc_paused():  # the workers fork inside: they run without it too
        return _Applier(ops, ctx).run()


_LEASE_ASKED, _LEASE_OK, _LEASE_LOST = "lease?", b"G", b"L"


def apply_batch_apart(ops: list[Op], ctx: ApplyContext, deadlines: Deadlines) -> list[OpResult]:
    """apply_batch in a process of its own (its workers in its process group), so that the run's process
    never waits on a share: the results stream back to `ctx.on_result` here, the lease is checked here at
    the batch's barrier, and `deadlines` ends the batch - every process of it killed - when a side stops
    answering.  An interruption here gives the batch GRACE seconds to drop its staged files, then kills it."""
    where = {id(op): i for i, op in enumerate(ops)}

    def body(out_fd: int, in_fd: int) -> None:
        stop: list[str] = []
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda signum, _: stop.append(signal.Signals(signum).name))
        pending: list[tuple[object, ...]] = []

        def send() -> None:
            if pending:
                write_frame(out_fd, ("results", pending[:]))
                pending.clear()

        def on_result(r: OpResult) -> None:
            pending.append((where[id(r.op)], r.ok, r.error, r.bytes, r.started, r.ended, r.ident, r.prepared))
            if len(pending) >= _FLUSH_EVERY:
                send()

        def check_lease() -> None:
            send()
            write_frame(out_fd, (_LEASE_ASKED,))
            if os.read(in_fd, 1) != _LEASE_OK:
                raise LeaseLost("the lease was lost")  # the run's process knows (and says) why

        def stop_requested() -> None:
            if stop:
                raise Interrupted(stop[0])

        here = dataclasses.replace(ctx, on_result=on_result, check_lease=check_lease, stop_requested=stop_requested)
        try:
            apply_batch(ops, here)
            end: tuple[str, object] = ("ok", None)
        except BaseException as exc:  # noqa: BLE001 - handed to the run's process
            end = ("error", exc)
        send()
        write_frame(out_fd, end)

    results: list[OpResult] = []
    ends: list[tuple[str, object]] = []
    lost: list[LeaseLost] = []

    def on_frame(child: Child, frame: tuple[object, ...]) -> None:
        if frame[0] == "results":
            for idx, ok, error, nbytes, started, ended, ident, prepared in frame[1]:  # type: ignore[attr-defined]
                result = OpResult(ops[idx], ok, error, nbytes, started, ended, prepared, ident)
                results.append(result)
                ctx.on_result(result)
        elif frame[0] == _LEASE_ASKED:
            try:
                ctx.check_lease()
                child.send(_LEASE_OK)
            except LeaseLost as exc:
                lost.append(exc)
                child.send(_LEASE_LOST)
        else:
            ends.append(frame)  # type: ignore[arg-type]

    ctx.check_lease()
    ctx.stop_requested()
    child = Child(body, stop=signal.SIGTERM, group=True)
    deadlines.wait([(child, (SRC, DEST))], on_frame, grace=GRACE)
    status = child.reap()
    if lost:
        raise lost[0]
    if not ends:
        raise RuntimeError(f"the batch's process died (exit status {status}); the next run goes on from there")
    kind, value = ends[-1]
    if kind == "error":
        raise value  # type: ignore[misc]
    return results
