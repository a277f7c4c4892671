"""The engine over bench/'s latency bed (a FUSE passthrough that delays every metadata request, as NFS does):
a sync there is exact, and the walk picks its threads for a network filesystem."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hasync_pipeline.engine.walk import AUTO_THREADS, threads_for
from hasync_pipeline_tests.conftest import options, snapshot, sync, write

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
pytestmark = pytest.mark.slow  # builds and mounts a filesystem


@pytest.fixture
def latency_pair(tmp_path):
    """Two latencyfs mounts (200 us per metadata request, kernel caches off), or a skip saying why not."""
    if not os.path.exists("/dev/fuse"):
        pytest.skip("/dev/fuse is absent here: no FUSE latency bed")
    if not (shutil.which("gcc") and shutil.which("pkg-config") and shutil.which("fusermount3")):
        pytest.skip("gcc, pkg-config or fuse3 missing (.ci/install-system-packages installs them)")
    from bench_nfs import build_latencyfs

    try:
        binary = build_latencyfs(str(tmp_path))
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"latencyfs does not build here (libfuse3-dev?): {exc}")
    mounts = []
    try:
        for side in ("dell", "hp"):
            (tmp_path / f"back-{side}").mkdir()
            (tmp_path / side).mkdir()
            mounted = subprocess.run(
                [binary, str(tmp_path / f"back-{side}"), str(tmp_path / side), "-o", "delay_us=200"],
                capture_output=True,
                text=True,
            )
            if mounted.returncode != 0:  # e.g. a container without the right to mount
                pytest.skip(f"cannot mount latencyfs here: {mounted.stderr.strip()[-300:]}")
            mounts.append(tmp_path / side)
        yield tmp_path / "dell", tmp_path / "hp"
    finally:
        for mount in mounts:
            subprocess.run(["fusermount3", "-u", "-z", str(mount)], check=False)


def test_a_sync_over_the_latency_bed_is_exact_and_walks_with_threads(latency_pair):
    dell, hp = latency_pair
    assert threads_for(str(dell)) == AUTO_THREADS  # a fuse mount counts as a network filesystem
    for folder in range(5):
        for i in range(10):
            write(dell / f"f{folder}" / f"file{i}.txt", f"{folder}-{i}" * (i + 1), 1_700_000_000 + i)
    os.symlink("f0/file0.txt", dell / "latest")
    os.link(dell / "f1" / "file1.txt", dell / "f1" / "alias.txt")
    report, _ = sync(dell, hp)
    assert report.clean, report.errors
    assert snapshot(hp) == snapshot(dell)
    assert os.stat(hp / "f1" / "alias.txt").st_ino == os.stat(hp / "f1" / "file1.txt").st_ino
    write(dell / "f2" / "file3.txt", "edited", 1_700_000_100)
    report, plan = sync(dell, hp)
    assert [op.path for op in plan.ops] == [b"f2/file3.txt"] and snapshot(hp) == snapshot(dell)
    report, plan = sync(dell, hp)
    assert plan.ops == []


def test_walk_threads_and_workers_are_chosen_by_where_the_folders_are(latency_pair, tmp_path):
    from hasync_pipeline.engine.latency import AUTO_WORKERS, LOCAL_WORKERS, on_network, workers_for
    from hasync_pipeline.engine.session import SyncSession

    dell, _ = latency_pair
    local = tmp_path / "local"
    local.mkdir()
    assert (threads_for(str(dell)), workers_for(on_network(str(dell)), 0)) == (AUTO_THREADS, AUTO_WORKERS)
    assert (threads_for(str(local)), workers_for(on_network(str(local)), 0)) == (1, LOCAL_WORKERS)
    assert workers_for(True, 4) == 4  # the seed's --workers 4 still means 4
    for src, dest, workers in ((local, dell, AUTO_WORKERS), (dell, local, LOCAL_WORKERS)):  # by the destination
        remote = SyncSession(str(src), str(dest), options(dry_run=True), "probe")
        remote.preflight()  # where the roots are is looked at there, off the main thread
        assert remote.remote and remote.opts.workers == workers  # a little work is forked (a root is remote)
    here = SyncSession(str(local), str(tmp_path / "other"), options(dry_run=True), "probe")
    (tmp_path / "other").mkdir()
    here.preflight()
    assert not here.remote and here.opts.workers == LOCAL_WORKERS
