"""When a server dies: the run's deadline per side, and the only way the run's process waits on a share.

A dead NFS server does not fail requests: on a hard mount every call on its share waits until it comes back,
and a thread waiting there ignores every signal but SIGKILL (measured on bench/latencyfs.c's `hang` mode: a
run sat in a `newfstatat` of the root for as long as the server was away, SIGTERM included).  So the run's
main thread never makes such a call.  The long calls (the walks, the batches) run in forked children, which
SIGKILL ends even in such a wait; the short ones (a root's stat, the journal, the markers, the folders'
settling) run on a thread the run may leave behind (`ThreadCall`: a fork per call cost more than the calls,
measured: 9 forks a run took the fast test suite from 54 s to 93 s).  The main thread waits on their pipes,
in `select`, where signals and deadlines still work.

Progress is any answer from a side, not operations finished (a 50 GB copy is progress all along): children
and threads stamp a `Board` in shared memory, one CLOCK_MONOTONIC slot per side, as their calls return (a
folder listed, a file or a 64 MiB chunk copied).  When no side a wait depends on has answered for
`stall_timeout`, each is probed (a `statvfs` of its root: NFS answers it from the server every time, never
from its attribute cache) for `probe_timeout`.  A side that does not answer the probe has stopped answering:
every child is killed, every thread left behind, and `SideStopped` names it ("dell (192.168.2.100:/data/media)
stopped answering: no reply for 60 s").  A side that answers is slow, not dead (a big syncfs, a purge of a
full trash): the wait goes on, up to SLOW_LIMIT x stall_timeout without any answer at all, then it ends the
same way.
"""

from __future__ import annotations

import mmap
import os
import select
import signal
import struct
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .forking import Child, FrameReader
from .latency import mount_source
from .outcome import NOT_ANSWERING, STOPPED_ANSWERING

SRC, DEST = 0, 1  # the board's slots: a run's two sides
_SLOT = struct.Struct("d")
PROBE_TIMEOUT = 5.0  # seconds a root has to answer its liveness probe (at most stall_timeout)
SLOW_LIMIT = 5  # a side that answers its probe but not the work: given up after this many stall_timeouts
TICK = 0.5  # seconds between two looks at the deadlines while waiting (signals interrupt the wait anyway)
GRACE = 2.0  # seconds an interrupted batch has to drop its staged files and report before it is killed


class Board:
    """When each side last answered, in memory shared with every child forked after it (an anonymous
    MAP_SHARED mapping): a child stamps, the parent reads, with no message to send or read."""

    def __init__(self, slots: int = 2):
        self._mm = mmap.mmap(-1, _SLOT.size * slots)
        self.slots = slots
        self.beat(*range(slots))

    def beat(self, *slots: int) -> None:
        now = time.monotonic()
        for slot in slots:
            _SLOT.pack_into(self._mm, slot * _SLOT.size, now)

    def last(self, slot: int) -> float:
        return float(_SLOT.unpack_from(self._mm, slot * _SLOT.size)[0])

    def beater(self, *slots: int) -> Callable[[], None]:
        """A call that stamps `slots`: handed to the code in a child that gets answers from those sides."""
        return lambda: self.beat(*slots)


@dataclass(frozen=True)
class Side:
    """One side of a run as the user knows it: "dell (192.168.2.100:/data/media)"."""

    label: str
    root: str
    source: str = ""  # what is mounted there, for a network filesystem (from /proc/mounts, never the share)

    @classmethod
    def of(cls, label: str, root: str) -> Side:
        return cls(label, root, mount_source(root))

    def __str__(self) -> str:
        return f"{self.label} ({self.source or self.root})"


class SideStopped(Exception):
    """A side stopped answering (a dead server, a hung mount): the run ends failed, its children killed, its
    lease released; nothing more is changed.  `sides`: who did not answer."""

    def __init__(self, sides: Sequence[Side], message: str):
        super().__init__(message)
        self.sides = tuple(sides)


class ThreadCall:
    """fn(*args) on a daemon thread, with the face of a forking.Child (Deadlines waits on both alike): its
    pipe reaches end of stream when the call has returned.  Nothing stops a thread waiting on a dead share:
    killing it leaves it behind (its late answer goes nowhere; the process still exits, as exit_group ends
    such a wait), so nothing may wait for it: `reap` with no time limit is only for a call that has returned."""

    pid = 0  # not a process

    def __init__(self, fn: Callable[..., Any], *args: Any):
        read_end, self._write_end = os.pipe()
        self.reader = FrameReader(read_end)
        self._result: tuple[str, Any] = ("error", RuntimeError(f"{getattr(fn, '__name__', fn)} did not return"))
        self._thread = threading.Thread(target=self._run, args=(fn, args), daemon=True, name="share-call")
        self._thread.start()

    def _run(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        try:
            self._result = ("ok", fn(*args))
        except BaseException as exc:  # noqa: BLE001 - raised where the result is collected
            self._result = ("error", exc)
        finally:
            os.close(self._write_end)  # end of stream: the waiting select wakes

    def outcome(self, _frames: list[Any]) -> Any:
        kind, value = self._result
        self.reap()
        if kind == "error":
            raise value
        return value

    def signal(self, _sig: int) -> None:
        """Nothing to signal: an interruption leaves the call behind (kill)."""

    def kill(self) -> None:
        """Leave it behind: it can only be stopped by ending the process."""

    def cancel(self, within: float | None = None) -> None:
        self.reap(within)

    def reap(self, within: float | None = None) -> int | None:
        """0 once the call has returned (waiting at most `within` seconds); None if it is left behind."""
        if self.reader.fd >= 0:
            os.close(self.reader.fd)
            self.reader.fd = -1
        self._thread.join(within)
        return None if self._thread.is_alive() else 0


Waitable = Child | ThreadCall  # what Deadlines waits on


def _probe_body(root: str) -> None:
    os.statvfs(root)  # a round trip to the server every time (NFS FSSTAT), never its attribute cache


class Deadlines:
    """A run's deadlines: one per side, `stall_timeout` seconds without an answer from it."""

    def __init__(
        self,
        sides: Sequence[Side],
        stall_timeout: float,
        stop_requested: Callable[[], None] = lambda: None,
        board: Board | None = None,
    ):
        """`board`: one made earlier, when children were forked before the run was (the CLI's early walks)."""
        self.sides = tuple(sides)
        self.stall_timeout = stall_timeout
        self.probe_timeout = min(PROBE_TIMEOUT, stall_timeout)
        self.stop_requested = stop_requested
        self.board = board if board is not None else Board(len(self.sides))
        self.live: set[Waitable] = set()  # children being waited on: killed by abandon()
        self.cut_short = False  # a child was killed before it had finished (its temp files may be left)

    # ---- running calls where they can be abandoned ----------------------------------------------------
    def call(self, slots: Sequence[int], fn: Callable[..., Any], *args: Any) -> Any:
        """fn(*args) on a thread the run may leave behind, its result back (or its exception raised here);
        SideStopped if the sides in `slots` stop answering meanwhile.  fn may call `self.board.beat` to show
        progress."""
        return self.results([(slots, fn, args)])[0]

    def results(
        self, calls: Iterable[tuple[Sequence[int], Callable[..., Any], tuple[Any, ...]]], within: float | None = None
    ) -> list[Any]:
        """Several calls at once, each on its own thread (e.g. one per side): their results in order.  The
        first exception raised by one of them is raised once every call has ended.  `within`: a side whose
        call has not returned in that many seconds is not answering (the probe before the lease)."""
        children = [(ThreadCall(fn, *args), tuple(slots)) for slots, fn, args in calls]
        return self.collect(children, within)

    def collect(self, children: Sequence[tuple[Waitable, Sequence[int]]], within: float | None = None) -> list[Any]:
        """The results of calls already started: call_in_child children (the walks) or ThreadCalls."""
        frames: dict[Waitable, list[Any]] = {child: [] for child, _ in children}
        self.wait(children, lambda child, frame: frames[child].append(frame), within=within)
        outcomes: list[Any] = []
        error: BaseException | None = None
        for child, _ in children:
            try:
                outcomes.append(child.outcome(frames[child]))
            except BaseException as exc:  # noqa: BLE001 - the first one is raised below
                outcomes.append(None)
                error = error or exc
        if error is not None:
            raise error
        return outcomes

    def wait(
        self,
        children: Sequence[tuple[Waitable, Sequence[int]]],
        on_frame: Callable[[Any, Any], None],
        grace: float = 0.0,
        within: float | None = None,
    ) -> None:
        """Read every child's frames (on_frame for each, in this thread) until each has closed its pipe.  A
        side a child depends on that stops answering ends the wait (SideStopped); so does anything raised by
        on_frame or stop_requested (an interruption).  Either way every child is killed first - after
        SIGTERM and up to `grace` seconds more of its frames, for an interruption (a batch then drops its
        staged files and reports what it did).  `within`: a hard limit, for calls that must answer at once."""
        started = time.monotonic()
        waiting = {child.reader.fd: (child, tuple(slots)) for child, slots in children}
        self.live.update(child for child, _ in children)
        slow_since: dict[int, float] = {}
        try:
            while waiting:
                self.stop_requested()
                ready, _, _ = select.select(list(waiting), [], [], TICK)
                for fd in ready:
                    child, _ = waiting[fd]
                    for frame in child.reader.read_available():
                        on_frame(child, frame)
                    if child.reader.eof:
                        del waiting[fd]
                slots = {slot for _, slots in waiting.values() for slot in slots}
                if within is not None and waiting and time.monotonic() - started >= within:
                    names = " and ".join(str(self.sides[s]) for s in sorted(slots))
                    raise SideStopped(
                        [self.sides[s] for s in sorted(slots)], f"{names} {NOT_ANSWERING}: no reply in {within:g} s"
                    )
                self._check(slots, started, slow_since)
        except BaseException as exc:
            if grace and not isinstance(exc, SideStopped):
                for child, _ in children:
                    child.signal(signal.SIGTERM)
                _drain(waiting, on_frame, grace)
            self.cut_short = self.cut_short or any(isinstance(child, Child) for child, _ in waiting.values())
            for child, _ in children:
                child.kill()
            for child, _ in children:
                child.reap(1.0)  # one stuck in the kernel past SIGKILL is left behind, never waited for
            raise
        finally:
            self.live.difference_update(child for child, _ in children)

    def _check(self, slots: set[int], started: float, slow_since: dict[int, float]) -> None:
        """Raise SideStopped for the sides in `slots` that have not answered for stall_timeout and do not
        answer a probe either (or answer it but have not answered the work for SLOW_LIMIT x as long)."""
        now = time.monotonic()
        quiet = {s: now - max(started, self.board.last(s)) for s in slots}
        for s in [s for s in slow_since if s not in quiet or quiet[s] < self.stall_timeout]:
            del slow_since[s]  # it answered again
        stalled = [
            s
            for s, q in quiet.items()
            if q >= self.stall_timeout and (s not in slow_since or now - slow_since[s] >= self.stall_timeout)
        ]
        if not stalled:
            return
        dead = self.probe(stalled)
        if dead:
            names = " and ".join(str(self.sides[s]) for s in dead)
            longest = max(quiet[s] for s in dead)
            raise SideStopped(
                [self.sides[s] for s in dead], f"{names} {STOPPED_ANSWERING}: no reply for {longest:.0f} s"
            )
        for s in stalled:
            if quiet[s] >= SLOW_LIMIT * self.stall_timeout:
                raise SideStopped(
                    [self.sides[s]],
                    f"{self.sides[s]} {STOPPED_ANSWERING}: no progress for {quiet[s]:.0f} s (its root still answers "
                    "a probe: a hung file or lock?)",
                )
            slow_since[s] = time.monotonic()  # alive: looked at again after another stall_timeout

    # ---- probes --------------------------------------------------------------------------------------
    def probe(self, slots: Sequence[int]) -> list[int]:
        """The slots whose root does not answer a statvfs within probe_timeout."""
        return dead_roots([self.sides[s].root for s in slots], self.probe_timeout, slots)

    def abandon(self) -> None:
        """Kill every child being waited on, leave every thread (another thread's last resort: a signal the
        run did not answer)."""
        for child in list(self.live):
            child.kill()


def _drain(
    waiting: dict[int, tuple[Waitable, tuple[int, ...]]], on_frame: Callable[[Any, Any], None], within: float
) -> None:
    """What the children still say within `within` seconds (an interrupted batch's last results); no
    deadline, no stop request, no error from on_frame ends it early."""
    deadline = time.monotonic() + within
    while waiting and time.monotonic() < deadline:
        ready, _, _ = select.select(list(waiting), [], [], max(0.0, deadline - time.monotonic()))
        for fd in ready:
            child, _ = waiting[fd]
            for frame in child.reader.read_available():
                try:
                    on_frame(child, frame)
                except Exception:  # noqa: BLE001,S112 - the error already raised is the one to report
                    continue
            if child.reader.eof:
                del waiting[fd]


def dead_roots(roots: Sequence[str], timeout: float, keys: Sequence[Any] | None = None) -> list[Any]:
    """The keys (default: the roots) of the roots that do not answer a statvfs within `timeout` seconds;
    an error (missing, EIO) is an answer.  Each probe runs on a thread of its own, left behind if it hangs."""
    keys = list(keys if keys is not None else roots)
    children = {ThreadCall(_probe_body, root): key for root, key in zip(roots, keys, strict=True)}
    deadline = time.monotonic() + timeout
    waiting = {child.reader.fd: child for child in children}
    try:
        while waiting and time.monotonic() < deadline:
            ready, _, _ = select.select(list(waiting), [], [], max(0.0, deadline - time.monotonic()))
            for fd in ready:
                child = waiting[fd]
                child.reader.read_available()
                if child.reader.eof:
                    del waiting[fd]
    finally:
        for child in children:
            child.cancel(within=0.5)
    return [children[child] for child in waiting.values()]
