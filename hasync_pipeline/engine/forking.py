"""Forked worker processes talking to the parent over pipes.

Why processes and not threads: the engine is syscall-bound, and with CPython's GIL every syscall hands the
lock over; measured here, 2 threads copying small files took 2.4x as long as 1 thread.  Forked children
share the parent's memory copy-on-write (the plan is not re-sent) and run truly in parallel.  Children never
log or print (a lock held by another parent thread at fork time could deadlock them); they only talk through
their pipe and leave with os._exit.
"""

from __future__ import annotations

import os
import pickle
import signal
import struct
import time
from collections.abc import Callable
from typing import Any

_LEN = struct.Struct("!I")
_STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}


def write_frame(fd: int, obj: Any) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    view = memoryview(_LEN.pack(len(data)) + data)
    while view:
        view = view[os.write(fd, view) :]


class FrameReader:
    """Splits a byte stream from a pipe into the objects written by write_frame."""

    def __init__(self, fd: int):
        self.fd = fd
        self.buf = bytearray()
        self.eof = False

    def read_available(self) -> list[Any]:
        """One read(); the complete frames it finished (sets .eof at end of stream)."""
        data = os.read(self.fd, 1 << 20)
        if not data:
            self.eof = True
        self.buf += data
        frames = []
        while len(self.buf) >= _LEN.size:
            (size,) = _LEN.unpack_from(self.buf)
            if len(self.buf) < _LEN.size + size:
                break
            frames.append(pickle.loads(bytes(self.buf[_LEN.size : _LEN.size + size])))
            del self.buf[: _LEN.size + size]
        return frames

    def read_all(self) -> list[Any]:
        frames = []
        while not self.eof:
            frames += self.read_available()
        return frames


class Child:
    """A forked process running `body(out_fd, in_fd)`; the parent reads `out` and may write to `inp`."""

    def __init__(self, body: Callable[[int, int], None], stop: int = signal.SIGKILL, group: bool = False):
        """`stop`: the signal that ends it if an interruption arrives as it starts (a worker that must clean up
        after itself catches SIGTERM; a walk can simply be killed).  `group`: the child leads a process group
        of its own, so that `kill()` also ends the processes it forks (a batch's workers)."""
        out_r, out_w = os.pipe()
        in_r, in_w = os.pipe()
        # SIGTERM/SIGINT are held back across fork(): a handler's exception raised inside the at-fork hooks
        # is swallowed by Python, and one raised before the pid is known would orphan the child
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
        pid = os.fork()
        if pid == 0:  # the child
            code = 0
            try:
                if group:
                    os.setpgid(0, 0)
                for sig in _STOP_SIGNALS:
                    signal.signal(sig, signal.SIG_IGN)  # the body installs its own, if it wants them
                signal.pthread_sigmask(signal.SIG_SETMASK, previous)
                os.close(out_r)
                os.close(in_w)
                body(out_w, in_r)
            except BaseException:  # noqa: BLE001 - reported to the parent by the exit status
                code = 70
            finally:
                os._exit(code)
        self.pid, self.group = pid, group
        if group:
            try:
                os.setpgid(pid, pid)  # also here: a kill() right after fork() must reach the group
            except OSError:
                pass  # the child did it first
        os.close(out_w)
        os.close(in_r)
        self.reader = FrameReader(out_r)
        self.control = in_w
        self.exit_status: int | None = None
        try:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)  # a signal held back is handled here...
        except BaseException:
            # ...and the exception its handler raises leaves the caller without this child: stop and reap it
            # first (it was found under CI load: a worker started as the run was terminated copied on, orphaned)
            self.signal(stop)
            self.reap()
            raise

    def outcome(self, frames: list[Any]) -> Any:
        """The return value of a call_in_child body from the frames it wrote, or its exception."""
        return outcome_of(self, frames)

    def send(self, data: bytes) -> None:
        try:
            os.write(self.control, data)
        except BrokenPipeError:
            pass  # the child has gone; its end of stream tells the rest

    def signal(self, sig: int) -> None:
        try:
            os.kill(self.pid, sig)
        except ProcessLookupError:
            pass

    def kill(self) -> None:
        """SIGKILL it (and its process group, if it leads one): the one signal that ends a wait on a dead NFS
        or FUSE server."""
        if self.exit_status is not None:
            return
        try:
            if self.group:
                os.killpg(self.pid, signal.SIGKILL)
            else:
                os.kill(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def cancel(self, within: float | None = None) -> None:
        """Stop it if it is still running, and reap it (a no-op once its result was collected).  `within`:
        wait at most that long for it to go (a process stuck in the kernel may never), else leave it."""
        if self.exit_status is None:
            self.kill()
            self.reap(within)

    def reap(self, within: float | None = None) -> int | None:
        """Its exit code, waiting for it to end; with `within`, at most that many seconds (None if it has
        not ended by then: it is then left to end by itself)."""
        if self.exit_status is None:
            if self.reader.fd >= 0:
                os.close(self.reader.fd)
                os.close(self.control)
                self.reader.fd = self.control = -1
            if within is None:
                _, status = os.waitpid(self.pid, 0)
            else:
                deadline = time.monotonic() + within
                while True:
                    pid, status = os.waitpid(self.pid, os.WNOHANG)
                    if pid or time.monotonic() >= deadline:
                        break
                    time.sleep(0.01)  # polling a process that was sent SIGKILL: no event to wait for
                if not pid:
                    return None
            self.exit_status = os.waitstatus_to_exitcode(status)
        return self.exit_status


def call_in_child(fn: Callable[..., Any], *args: Any, group: bool = False) -> Child:
    """Start fn(*args) in a forked child; `result_of(child)` (or liveness.Deadlines.result) collects its return
    value or exception.  Frames it writes itself before the result (progress) come first."""

    def body(out_fd: int, _in_fd: int) -> None:
        try:
            result = ("ok", fn(*args))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the parent (Interrupted too)
            result = ("error", exc)
        try:
            write_frame(out_fd, result)
        except (pickle.PicklingError, TypeError, AttributeError) as exc:  # an object that cannot travel
            what = repr(result[1]) if result[0] == "error" else f"its result ({exc})"
            write_frame(out_fd, ("error", RuntimeError(f"{getattr(fn, '__name__', fn)} in a child: {what}")))

    return Child(body, group=group)


def outcome_of(child: Child, frames: list[Any]) -> Any:
    """The return value of a call_in_child from the frames it wrote (its exit reaped), or its exception."""
    status = child.reap()
    ends = [f for f in frames if isinstance(f, tuple) and len(f) == 2 and f[0] in ("ok", "error")]
    if not ends:
        raise RuntimeError(f"worker process {child.pid} died (exit status {status})")
    kind, value = ends[-1]
    if kind == "error":
        raise value
    return value


def result_of(child: Child) -> Any:
    """Wait for a call_in_child's result, without a deadline: for children that touch no share."""
    return outcome_of(child, child.reader.read_all())
