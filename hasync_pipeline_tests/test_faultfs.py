"""The bed of the tests of a dying server (faultfs.py over bench/latencyfs.c -o control=) does what it says:
hang keeps real callers waiting until heal, eio fails them at once, killed callers are let go as on NFS, and
an unmount leaves neither a mount nor a daemon, requests hanging or not.  Each wait on a process is bounded by
a timeout; what a test waits for is a condition (the caller blocked in the kernel, the caller's end)."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time

import pytest

from hasync_pipeline_tests.faultfs import blocked_in_fuse, faulty_share, process_state

pytestmark = pytest.mark.slow  # builds and mounts a filesystem

STAT = "import os, sys; os.stat(sys.argv[1])"
STUCK = 2.0  # s a caller of a hung share must go on waiting (a bound: no caller of a live share takes it)


@pytest.fixture
def procs():
    """Popen's that the test started; whatever still runs at the end is killed and reaped."""
    started: list[subprocess.Popen] = []
    yield lambda *args, **kw: started.append(subprocess.Popen(*args, **kw)) or started[-1]
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()


@pytest.fixture
def share(tmp_path):
    with faulty_share(tmp_path / "back", tmp_path / "mnt") as share:
        (share.backing / "a.txt").write_text("alpha")
        yield share


def mounted(path) -> bool:
    with open("/proc/mounts") as f:
        return any(line.split()[1] == str(path) for line in f)


def gone(pid: int) -> bool:
    return process_state(pid) in (None, "Z")


def test_a_hung_share_keeps_a_stat_waiting_and_answers_it_once_healed(share, procs):
    os.stat(share.mountpoint / "a.txt")
    share.hang()
    proc = procs([sys.executable, "-c", STAT, str(share.mountpoint / "a.txt")])
    assert share.wait_blocked(proc.pid)  # in the kernel, waiting for our answer
    with pytest.raises(subprocess.TimeoutExpired):
        proc.wait(timeout=STUCK)
    assert blocked_in_fuse(proc.pid)
    share.heal()
    assert proc.wait(timeout=30) == 0  # the very same call, answered: the server came back
    assert os.stat(share.mountpoint / "a.txt").st_size == 5


def test_eio_fails_every_request_at_once_the_waiting_ones_too(share, procs):
    share.hang()
    proc = procs([sys.executable, "-c", STAT, str(share.mountpoint / "a.txt")], stderr=subprocess.PIPE, text=True)
    assert share.wait_blocked(proc.pid)
    share.eio()
    assert proc.wait(timeout=30) == 1 and "[Errno 5]" in proc.stderr.read()  # the waiting stat fails
    started = time.monotonic()
    for call in (os.stat, os.listdir, lambda p: open(p / "a.txt").close()):
        with pytest.raises(OSError) as failed:
            call(share.mountpoint)
        assert failed.value.errno == errno.EIO
    assert time.monotonic() - started < 1.0  # at once: a soft mount that timed out
    share.heal()
    assert os.listdir(share.mountpoint) == ["a.txt"]


def test_data_requests_hang_too_and_writes_and_reads_work_after_heal(share, procs):
    # opened while the server is up; its write and read come after it died
    writer = (
        "import os, sys; fd = os.open(sys.argv[1], os.O_RDWR); print('open', flush=True); sys.stdin.readline();"
        " os.pwrite(fd, b'late', 0); sys.stdout.write(os.pread(fd, 100, 0).decode()); os.close(fd)"
    )
    proc = procs(
        [sys.executable, "-c", writer, str(share.mountpoint / "a.txt")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline() == "open\n"
    share.hang()
    proc.stdin.write("go\n")
    proc.stdin.flush()
    assert share.wait_blocked(proc.pid)  # in its write
    with pytest.raises(subprocess.TimeoutExpired):
        proc.wait(timeout=STUCK)
    assert (share.backing / "a.txt").read_text() == "alpha"
    share.heal()
    out, _ = proc.communicate(timeout=30)
    assert (proc.returncode, out) == (0, "latea")
    assert (share.backing / "a.txt").read_text() == "latea"
    (share.mountpoint / "new" / "deep").mkdir(parents=True)
    (share.mountpoint / "new" / "deep" / "b.bin").write_bytes(b"\x00beta" * 10_000)
    os.rename(share.mountpoint / "new" / "deep" / "b.bin", share.mountpoint / "new" / "b.bin")
    assert (share.mountpoint / "new" / "b.bin").read_bytes() == b"\x00beta" * 10_000
    assert (share.backing / "new" / "b.bin").read_bytes() == b"\x00beta" * 10_000


def test_a_caller_killed_while_it_waits_is_let_go_as_on_nfs_other_signals_do_not_end_the_wait(share, procs):
    target = str(share.mountpoint / "a.txt")
    share.hang()
    # SIGUSR1 has a handler in this one: were its stat interrupted (EINTR), the handler would end it at once
    handled = procs(
        [
            sys.executable,
            "-c",
            "import signal, sys; signal.signal(signal.SIGUSR1, lambda *_: sys.exit(3));" + STAT,
            target,
        ]
    )
    killed = procs([sys.executable, "-c", STAT, target])
    terminated = procs([sys.executable, "-c", STAT, target])  # SIGTERM without a handler: a fatal signal
    assert all(share.wait_blocked(p.pid) for p in (handled, killed, terminated))
    handled.send_signal(signal.SIGUSR1)
    killed.kill()
    terminated.terminate()
    assert killed.wait(timeout=30) == -signal.SIGKILL and terminated.wait(timeout=30) == -signal.SIGTERM
    with pytest.raises(subprocess.TimeoutExpired):
        handled.wait(timeout=STUCK)
    assert share.mode == "hang" and blocked_in_fuse(handled.pid)
    share.heal()
    assert handled.wait(timeout=30) == 3  # answered; then its handler ran


def test_unmount_while_a_request_hangs_leaves_no_mount_and_no_daemon(share, procs):
    daemon = share.daemon_pid
    assert daemon is not None and not gone(daemon) and mounted(share.mountpoint)
    share.hang()
    proc = procs([sys.executable, "-c", STAT, str(share.mountpoint / "a.txt")])
    assert share.wait_blocked(proc.pid)
    with pytest.raises(subprocess.TimeoutExpired):
        proc.wait(timeout=STUCK)
    share.unmount()  # heals first: the stat is answered, the daemon ends by itself
    assert not mounted(share.mountpoint) and gone(daemon)
    assert proc.wait(timeout=30) == 0
    assert (share.backing / "a.txt").read_text() == "alpha"


def test_a_server_that_never_comes_back_is_unmounted_by_force(share, procs):
    daemon = share.daemon_pid
    holder = procs([sys.executable, "-c", "import sys; sys.stdin.read()"], cwd=share.mountpoint, stdin=subprocess.PIPE)
    share.hang()  # after the holder's chdir: a chdir into a hung share waits too
    proc = procs([sys.executable, "-c", STAT, str(share.mountpoint / "a.txt")], stderr=subprocess.PIPE, text=True)
    assert share.wait_blocked(proc.pid)
    share.unmount(heal=False)  # the connection aborted, the daemon killed: nothing answers the stat, ever
    assert not mounted(share.mountpoint) and gone(daemon)
    assert proc.wait(timeout=30) == 1 and "[Errno 103]" in proc.stderr.read()  # ECONNABORTED
    holder.stdin.close()
    assert holder.wait(timeout=30) == 0  # its folder is gone, it is not stuck
