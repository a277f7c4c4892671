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

    def __init__(self, body: Callable[[int, int], None], stop: int = signal.SIGKILL):
        """`stop`: the signal that ends it if an interruption arrives as it starts (a worker that must clean up
        after itself catches SIGTERM; a walk can simply be killed)."""
        out_r, out_w = os.pipe()
        in_r, in_w = os.pipe()
        # SIGTERM/SIGINT are held back across fork(): a handler's exception raised inside the at-fork hooks
        # is swallowed by Python, and one raised before the pid is known would orphan the child
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
        pid = os.fork()
        if pid == 0:  # the child
            code = 0
            try:
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
        self.pid = pid
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

    def cancel(self) -> None:
        """Stop it if it is still running, and reap it (a no-op once its result was collected)."""
        if self.exit_status is None:
            self.signal(signal.SIGKILL)
            self.reap()

    def reap(self) -> int:
        if self.exit_status is None:
            os.close(self.reader.fd)
            os.close(self.control)
            _, status = os.waitpid(self.pid, 0)
            self.exit_status = os.waitstatus_to_exitcode(status)
        return self.exit_status


def call_in_child(fn: Callable[..., Any], *args: Any) -> Child:
    """Start fn(*args) in a forked child; `result_of(child)` collects its return value or exception."""

    def body(out_fd: int, _in_fd: int) -> None:
        try:
            result = ("ok", fn(*args))
        except Exception as exc:  # noqa: BLE001 - re-raised in the parent
            result = ("error", exc)
        write_frame(out_fd, result)

    return Child(body)


def result_of(child: Child) -> Any:
    frames = child.reader.read_all()
    status = child.reap()
    if not frames:
        raise RuntimeError(f"worker process {child.pid} died (exit status {status})")
    kind, value = frames[0]
    if kind == "error":
        raise value
    return value
