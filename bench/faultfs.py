"""A share whose server can die, for the tests of what a sync does then: bench/latencyfs.c mounted with a
control file (`-o control=`), switched at run time between answering (ok), never answering (hang: a hard NFS
mount whose server died, the callers wait) and failing every request with EIO (a soft mount that timed out).

    with FaultyShare(tmp_path / "back", tmp_path / "mnt") as share:
        share.hang()                       # from the next request on, nothing on share.mountpoint answers
        proc = subprocess.Popen(["stat", str(share.mountpoint)])
        assert share.wait_blocked(proc.pid)  # it waits for the server, as it would on NFS
        share.heal()                       # the server is back: the waiting requests are answered
        assert proc.wait(timeout=10) == 0

A process that waits is let go (EINTR) when it is killed, as on a hard NFS mount; other signals do not end
its wait.  Leaving the `with` (a failed test included) heals, unmounts and, if the mount is still held (a
process working in it), aborts the connection and kills the daemon: no mount and no daemon are left behind.
The tests take it through their own faultfs.py, whose faulty_share() skips a test (saying why)
where FUSE, gcc, pkg-config or fusermount3 are missing or mounting is not permitted.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_nfs, beside it

SERVER_THREADS = 64  # requests the daemon answers at once, hung ones included (bench_nfs.py's figure)
UNMOUNT_GRACE = 2.0  # s for the daemon to end by itself once healed and unmounted, before it is made to
KILL_GRACE = 5.0  # s for it to end once aborted or killed (it ends at once: this is only a bound)

_build_lock = threading.Lock()
_build: tuple[str | None, str | None] | None = None  # (binary, why not), once per session
_live: set[FaultyShare] = set()  # mounted, so that even an interpreter leaving without cleanup unmounts


class MountRefused(RuntimeError):
    """latencyfs would not mount here (no right to mount, no FUSE module...)."""


def fuse_missing() -> str | None:
    """Why this machine has no FUSE bed, or None."""
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse is absent here: no FUSE fault bed"
    missing = [tool for tool in ("gcc", "pkg-config", "fusermount3") if shutil.which(tool) is None]
    if missing:
        return f"{', '.join(missing)} missing (.ci/install-system-packages installs them)"
    return None


def latencyfs_binary() -> str:
    """bench/latencyfs.c compiled once per session (into a temp folder removed at exit); RuntimeError if not."""
    global _build
    with _build_lock:
        if _build is None:
            out = tempfile.mkdtemp(prefix="hasync-faultfs-")
            atexit.register(shutil.rmtree, out, True)
            try:
                from bench_nfs import build_latencyfs

                _build = (build_latencyfs(out), None)
            except (ImportError, OSError, subprocess.CalledProcessError) as exc:
                _build = (None, f"latencyfs does not build here (libfuse3-dev?): {exc}")
        binary, why_not = _build
    if binary is None:
        raise RuntimeError(why_not)
    return binary


def _unescape(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), field)


def _mount_dev(mountpoint: str) -> str | None:
    """major:minor of the latencyfs mount at mountpoint, from mountinfo (no request reaches the mount)."""
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            if _unescape(fields[4]) == mountpoint and fields[sep + 1] == "fuse.latencyfs":
                return fields[2]
    return None


def process_state(pid: int) -> str | None:
    """The State letter of pid ("Z" for a zombie), None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None


def blocked_in_fuse(pid: int) -> bool:
    """Whether a thread of pid waits for the answer to a FUSE request (the kernel's request_wait_answer)."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return False
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/wchan") as f:
                if f.read().strip() == "request_wait_answer":
                    return True
        except (FileNotFoundError, ProcessLookupError):
            continue
    return False


class FaultyShare:
    """backing mounted at mountpoint through latencyfs with a control file; hang(), eio(), heal() switch it.

    delay_us and cache are latencyfs's (a round trip per metadata request, the kernel's caches for 3 s); the
    control file defaults to `<mountpoint>.control`, next to the mount, outside it and outside backing."""

    def __init__(
        self,
        backing: str | os.PathLike[str],
        mountpoint: str | os.PathLike[str],
        *,
        delay_us: int = 0,
        cache: bool = False,
        control: str | os.PathLike[str] | None = None,
        binary: str | None = None,
    ) -> None:
        self.backing = Path(backing)
        self.mountpoint = Path(mountpoint)
        self.backing.mkdir(parents=True, exist_ok=True)
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        self.backing = self.backing.resolve()  # resolved now: later, while hung, a lookup there would wait
        self.mountpoint = self.mountpoint.resolve()
        control = Path(control) if control is not None else self.mountpoint.with_name(self.mountpoint.name + ".control")
        self.control = control.parent.resolve() / control.name
        self.delay_us = delay_us
        self.cache = cache
        self.binary = binary
        self.daemon_pid: int | None = None
        self._pidfd: int | None = None
        self._dev: str | None = None

    # -- the server's health --------------------------------------------------------------------------------

    def _say(self, word: str) -> None:
        tmp = self.control.with_name(f"{self.control.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_text(word + "\n")
        os.replace(tmp, self.control)  # atomic: a request reads the old word or the new, never half of one

    def hang(self) -> None:
        """From the next request on, every request waits unanswered (a server that died, a hard mount)."""
        self._say("hang")

    def eio(self) -> None:
        """From the next request on (the waiting ones included), every request fails with EIO (soft mount)."""
        self._say("eio")

    def heal(self) -> None:
        """The server is back: the waiting requests are answered, the next ones too."""
        self._say("ok")

    @property
    def mode(self) -> str:
        """What the control file says: ok, hang or eio (anything else counts as ok)."""
        try:
            word = self.control.read_text().strip()
        except FileNotFoundError:
            return "ok"
        return word if word in ("hang", "eio") else "ok"

    def wait_blocked(self, pid: int, timeout: float = 10.0) -> bool:
        """True as soon as a thread of pid waits for a FUSE answer (a request of this hung share, in a test),
        False if it does not within timeout s (or has ended): a condition to wait for, not a sleep."""
        deadline = time.monotonic() + timeout
        while not blocked_in_fuse(pid):
            if time.monotonic() > deadline or process_state(pid) in (None, "Z"):
                return False
            time.sleep(0.005)
        return True

    # -- mount and unmount ----------------------------------------------------------------------------------

    @property
    def mounted(self) -> bool:
        """Whether the mount is in this process's mount table (read from /proc: no request is made)."""
        return _mount_dev(str(self.mountpoint)) is not None

    @property
    def daemon_alive(self) -> bool:
        return self.daemon_pid is not None and process_state(self.daemon_pid) not in (None, "Z")

    def mount(self) -> FaultyShare:
        """Mount (healed); MountRefused if latencyfs cannot mount here.  Returns self."""
        if self.mounted:
            raise RuntimeError(f"{self.mountpoint} is mounted already")
        binary = self.binary or latencyfs_binary()
        self.heal()
        cmd = [binary, str(self.backing), str(self.mountpoint)]
        cmd += ["-o", f"delay_us={self.delay_us},max_threads={SERVER_THREADS},control={self.control}"]
        cmd += ["-o", "cache"] if self.cache else []
        done = subprocess.run(cmd, capture_output=True, text=True)  # returns once mounted: the daemon stays
        if done.returncode != 0:
            raise MountRefused(f"cannot mount latencyfs here: {done.stderr.strip()[-300:]}")
        _live.add(self)
        self._dev = _mount_dev(str(self.mountpoint))
        self.daemon_pid = self._find_daemon(cmd)
        if self.daemon_pid is not None:
            with contextlib.suppress(OSError):  # a pidfd: no mistaking a reused pid for the daemon
                self._pidfd = os.pidfd_open(self.daemon_pid)
        return self

    @staticmethod
    def _find_daemon(cmd: list[str]) -> int | None:
        """The daemon latencyfs forked off (same command line), the newest if an old one still lingers."""
        wanted = b"\0".join(arg.encode() for arg in cmd) + b"\0"
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if f.read() != wanted:
                        continue
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] != "Z":
                found.append((int(fields[19]), int(entry)))  # (start time, pid)
        return max(found)[1] if found else None

    def _wait_daemon_gone(self, timeout: float) -> bool:
        if self.daemon_pid is None:
            return True
        if self._pidfd is not None:
            select.select([self._pidfd], [], [], timeout)  # readable once the daemon has ended
            return not self.daemon_alive
        deadline = time.monotonic() + timeout
        while self.daemon_alive and time.monotonic() < deadline:
            time.sleep(0.01)
        return not self.daemon_alive

    def _abort(self) -> None:
        """Abort the connection (fusectl, where mounted): every waiting request fails, the daemon ends."""
        if self._dev is None:
            return
        major, minor = (int(n) for n in self._dev.split(":"))
        abort = f"/sys/fs/fuse/connections/{major << 20 | minor}/abort"
        with contextlib.suppress(OSError):
            with open(abort, "w") as f:
                f.write("1")

    def _kill(self) -> None:
        if self.daemon_pid is None or not self.daemon_alive:
            return
        with contextlib.suppress(ProcessLookupError, OSError):
            if self._pidfd is not None:
                signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)
            else:
                os.kill(self.daemon_pid, signal.SIGKILL)

    def _lazy_unmount(self) -> None:
        if self.mounted:
            subprocess.run(["fusermount3", "-u", "-z", str(self.mountpoint)], capture_output=True, check=False)

    def unmount(self, *, heal: bool = True) -> None:
        """Heal, unmount (lazily: at once, even while requests hang) and wait for the daemon to end; if it does
        not (the share still held by a process, or requests left hanging: heal=False, a server that never comes
        back, unmounted by force), abort the connection and kill the daemon: what still waits then fails with
        ECONNABORTED.  RuntimeError if a mount or a daemon is left after all that.  Idempotent."""
        if self.daemon_pid is None and not self.mounted:
            return
        if heal:
            with contextlib.suppress(OSError):
                self.heal()
        self._lazy_unmount()
        if not self._wait_daemon_gone(UNMOUNT_GRACE):
            self._abort()
            if not self._wait_daemon_gone(1.0):
                self._kill()
                self._wait_daemon_gone(KILL_GRACE)
        self._lazy_unmount()  # a mount whose daemon died before it was unmounted ("not connected")
        left = [what for what, there in (("mount", self.mounted), ("daemon", self.daemon_alive)) if there]
        if left:
            raise RuntimeError(f"{self.mountpoint}: {' and '.join(left)} left after unmount (pid {self.daemon_pid})")
        _live.discard(self)
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None
        self.daemon_pid = None
        with contextlib.suppress(FileNotFoundError):
            self.control.unlink()

    def __enter__(self) -> FaultyShare:
        return self.mount()

    def __exit__(self, *exc: object) -> None:
        self.unmount()


@atexit.register
def _unmount_leftovers() -> None:
    for share in list(_live):
        with contextlib.suppress(Exception):
            share.unmount()
