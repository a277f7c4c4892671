"""The multi-process apply: many files through forked workers, failures inside them, and interruption."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from hasync_pipeline.engine import run_sync
from hasync_pipeline.engine.workers import _split_into_shares
from hasync_pipeline_tests.conftest import (
    NOBODY,
    as_user,
    internal_leftovers,
    largest_temp_file,
    options,
    pair_args,
    snapshot,
    sync,
    synced,
    write,
)

T0 = time.time() - 10_000


def make_many(root, count, folders=7, size=300, mtime=T0):
    for i in range(count):
        write(root / f"dir{i % folders}" / f"file{i:05d}", os.urandom(size), mtime)


@pytest.mark.slow
def test_many_files_through_four_workers_converge(pair):
    dell, hp = pair
    make_many(dell, 200)
    synced(dell, hp)
    make_many(dell, 1500, mtime=T0 + 60)  # 200 changed, 1300 new
    results = []
    report, plan = run_sync(str(dell), str(hp), options(workers=4), "many", on_result=results.append)
    assert report.failed == 0 and (report.created, report.updated) == (1300, 200)
    assert len(results) == len(plan.ops) == len({r.op.path for r in results})  # one result per op
    assert snapshot(dell) == snapshot(hp)
    assert internal_leftovers(hp) == []
    trashed = [p for p in (hp / ".hasync-trash").rglob("file*")]
    assert len(trashed) == 200  # every overwritten version kept


def test_metadata_of_many_files_goes_through_the_workers_and_many_folders_settle_on_threads(pair):
    """300 chmod-only files are done by forked workers (on NFS one by one in the parent they waited a round
    trip each), a folder's own new mode before them; 40 folders made and 40 re-moded are settled a level at
    a time on threads: every mode and folder mtime as the source's, nothing copied."""
    dell, hp = pair
    for i in range(300):
        write(dell / f"dir{i % 3}" / f"file{i:03d}", "x", T0)
    for i in range(40):
        write(dell / "deep" / f"d{i:02d}" / "inner" / "f", "y", T0)
    synced(dell, hp)
    inodes = {p: p.stat().st_ino for p in hp.rglob("file*")}
    for i in range(300):
        os.chmod(dell / f"dir{i % 3}" / f"file{i:03d}", 0o600 + i % 2 * 0o040)
    os.chmod(dell / "dir1", 0o750)
    for i in range(40):
        write(dell / "new" / f"n{i:02d}" / "inner" / "f", "z", T0)  # 81 new folders
        os.chmod(dell / "deep" / f"d{i:02d}" / "inner", 0o555)  # re-moded: read-only, settled after its file
        os.utime(dell / "deep" / f"d{i:02d}" / "inner", (T0 - i, T0 - i))
        os.utime(dell / "new" / f"n{i:02d}" / "inner", (T0 - 2 * i, T0 - 2 * i))
    results = []
    report, plan = run_sync(str(dell), str(hp), options(workers=4), "meta", on_result=results.append)
    assert report.failed == 0 and report.errors == [] and report.bytes == 40
    assert sum(1 for op in plan.ops if op.action == "meta") == 300 + 1 + 40
    shares = _split_into_shares(plan.ops, 4)
    by_workers = [plan.ops[i].path for share in shares for _, group in share.meta for i in group]
    assert len(by_workers) == len(set(by_workers)) == 300 and all(b"/file" in p for p in by_workers)
    assert len(results) == len(plan.ops)
    assert {p: p.stat().st_ino for p in hp.rglob("file*")} == inodes  # changed in place, not copied

    def modes_and_folder_mtimes(root):
        out = {}
        for path in sorted(root.rglob("*")):
            if ".hasync" in str(path):
                continue
            st = path.lstat()
            out[str(path.relative_to(root))] = (st.st_mode, st.st_mtime_ns if path.is_dir() else None)
        return out

    assert modes_and_folder_mtimes(hp) == modes_and_folder_mtimes(dell)


_INTERRUPT_AFTER_FORK: list[bool] = []  # when set, the next fork sends the main thread SIGTERM as the child starts


def _interrupt_after_fork() -> None:
    if _INTERRUPT_AFTER_FORK:
        _INTERRUPT_AFTER_FORK.clear()  # once: one signal, to the thread that forked (where it is held back)
        signal.pthread_kill(threading.main_thread().ident, signal.SIGTERM)


os.register_at_fork(after_in_parent=_interrupt_after_fork)


def test_an_interruption_as_a_worker_starts_stops_and_reaps_it_first(tmp_path):
    """A SIGTERM held back across fork() is handled when Child() unblocks it; the exception its handler raises
    must not leave the new worker running on, unknown to the parent (it copied on, orphaned, under CI load)."""
    from hasync_pipeline.engine.forking import Child

    class Terminated(Exception):
        pass

    def raise_terminated(*_):
        raise Terminated

    marker = tmp_path / "worker-finished"

    def worker_body(out_fd: int, in_fd: int) -> None:
        stopped = []
        signal.signal(signal.SIGTERM, lambda *_: stopped.append(True))
        os.read(in_fd, 1)  # waits for the parent (or for its end of the pipe to close)
        marker.write_text("stopped" if stopped else "ran on")

    previous = signal.signal(signal.SIGTERM, raise_terminated)
    _INTERRUPT_AFTER_FORK.append(True)
    try:
        with pytest.raises(Terminated):
            Child(worker_body, stop=signal.SIGTERM)
    finally:
        _INTERRUPT_AFTER_FORK.clear()
        signal.signal(signal.SIGTERM, previous)
    assert marker.exists()  # reaped before the exception went on: the worker had finished


@pytest.mark.parametrize("remote", [False, True])
def test_a_little_work_is_forked_only_across_a_network(pair, remote):
    """Ten copies are not worth forking on a local disk; across a network each waits round trips, so they are
    spread over the workers (1% of 5000 files changed at 1 ms: 5.2 s inline, 2.1 s forked)."""
    from hasync_pipeline.engine.workers import ApplyContext, apply_batch

    dell, hp = pair
    for i in range(10):
        write(dell / f"dir{i % 5}" / f"file{i}", "x" * i, T0)
    _, plan = run_sync(str(dell), str(hp), options(dry_run=True))
    ctx = ApplyContext(str(dell), str(hp), None, workers=4, remote=remote, prepare=lambda result: os.getpid())
    results = apply_batch(plan.ops, ctx)
    assert all(r.ok for r in results) and snapshot(hp) == snapshot(dell)
    copied_by = {r.prepared for r in results if r.op.action == "copy"}
    assert (os.getpid() not in copied_by and len(copied_by) > 1) if remote else copied_by == {os.getpid()}


@pytest.mark.parametrize("deepest_first", [False, True])
def test_folders_are_done_a_level_at_a_time_on_threads(deepest_first):
    """levels.by_level: a level starts when the one before it has ended (a folder after its parent, or a
    folder settled after its children), its folders on threads together; results in the items' order."""

    from hasync_pipeline.engine.levels import by_level

    first_level = [b"a", b"c", b"d"] if not deepest_first else [b"a/b/c", b"a/b/x", b"a/b/y"]
    folders = [b"a", b"a/b", b"c", b"a/b/c", b"d", b"a/b/x", b"a/b/y"] + [b"e/%d" % i for i in range(30)]
    depth = {f: f.count(b"/") for f in folders}
    together = threading.Barrier(len(first_level), timeout=30)  # the first level's folders all run at once
    started: list[bytes] = []
    finished: list[bytes] = []
    lock = threading.Lock()

    def must_follow(a: bytes, b: bytes) -> bool:
        return depth[a] < depth[b] if deepest_first else depth[a] > depth[b]

    def do(folder: bytes) -> bytes:
        with lock:
            started.append(folder)
            waited_for = [f for f in folders if must_follow(folder, f)]
            assert all(f in finished for f in waited_for), f"{folder!r} started before the levels it follows ended"
        if folder in first_level:
            together.wait()  # fails (BrokenBarrierError) unless the level's folders run on threads together
        with lock:
            finished.append(folder)
        return folder.upper()

    assert by_level(folders, depth.get, do, threads=4, deepest_first=deepest_first) == [f.upper() for f in folders]
    assert sorted(started) == sorted(folders)

    names = []
    by_level(folders[:5], depth.get, lambda f: names.append(threading.current_thread().name), threads=4)
    assert names == [threading.current_thread().name] * 5  # a few: one by one here, no pool started


def test_failure_inside_a_worker_is_reported_and_the_rest_applied(pair):
    dell, hp = pair
    make_many(dell, 400)
    os.chmod(dell / "dir3" / "file00003", 0)
    for root in (dell.parent,):
        for d, dirs, files in os.walk(root):
            for n in [d] + [os.path.join(d, x) for x in dirs + files]:
                os.chown(n, NOBODY, NOBODY)

    def run():
        results = []
        report, _ = run_sync(str(dell), str(hp), options(workers=3), "t", on_result=results.append)
        return report.clean, [(r.op.path, r.error) for r in results if not r.ok], len(results)

    clean, failures, count = as_user(NOBODY, run)
    assert clean is False
    assert failures == [(b"dir3/file00003", "EACCES: Permission denied")]
    assert count == 407
    assert len(list(hp.rglob("file*"))) == 399


@pytest.mark.slow
def test_sigterm_stops_workers_and_leaves_no_temp_files(pair):
    dell, hp = pair
    block = os.urandom(1 << 20)
    write(dell / "big0.bin", "old", T0 - 100_000)
    synced(dell, hp)
    os.remove(dell / "big0.bin")
    for i in range(4):
        with open(dell / f"big{i}.bin", "wb") as f:
            for _ in range(128):
                f.write(block)
    make_many(dell, 300)  # enough operations for the multi-process path
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hasync_pipeline.cli",
            *pair_args(dell, hp, "media"),
            "--log-dir",
            str(hp.parent / "logs"),
            "--workers",
            "3",
            "--no-dry-run",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while largest_temp_file(hp) <= 8 << 20:
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.001)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 6, err
    assert "interrupted by SIGTERM" in err
    assert internal_leftovers(hp) == []
    assert (hp / "big0.bin").read_bytes() == b"old"
    for p in hp.glob("big*.bin"):  # whatever was installed is complete
        assert p.read_bytes() == (dell / p.name).read_bytes() or p.name == "big0.bin"
    report, _ = sync(dell, hp)
    assert report.failed == 0 and snapshot(dell) == snapshot(hp)


class StopNow(BaseException):
    pass


@pytest.mark.slow
def test_a_stop_request_is_honoured_between_files_even_without_a_signal_exception(pair):
    """A signal's exception can be swallowed (raised inside an at-fork hook): the engine also polls
    ApplyContext.stop_requested, and stops with no temp file left."""
    dell, hp = pair
    make_many(dell, 2000)
    results = []

    def stop_requested():
        if len(results) >= 100:
            raise StopNow()

    import pytest

    with pytest.raises(StopNow):
        run_sync(str(dell), str(hp), options(workers=3), "t", on_result=results.append, stop_requested=stop_requested)
    assert 100 <= len(results) < 2000
    assert internal_leftovers(hp) == []
    installed = [p for p in hp.rglob("file*")]
    assert all(p.read_bytes() == (dell / p.relative_to(hp)).read_bytes() for p in installed)
