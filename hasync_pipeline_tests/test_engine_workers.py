"""The multi-process apply: many files through forked workers, failures inside them, and interruption."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from hasync_pipeline.engine import run_sync
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
