"""When a server dies: the Dell's root is a FUSE stand-in for its NFS export (faultfs.py) that stops
answering (a hard mount whose server died) or answers EIO (a soft mount that timed out), switched while real
`ha-sync` processes and real Dagster runs work on it.  Every run must end by itself within `stall_timeout`
+ 15 s, naming the server, give its lease back and change nothing on the side that is still up; once the
server answers again the next cycle is an ordinary one (no first-sync, no temp files) and carries over what
was written on the survivor meanwhile."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hasync_pipeline_tests.conftest import internal_leftovers, pair_args, run_cli, snapshot, write
from hasync_pipeline_tests.faultfs import FaultyShare, faulty_share

pytestmark = pytest.mark.slow  # mounts filesystems, runs real processes against a dead server

STALL = 3.0  # s: these runs' --stall-timeout (the probe before the lease gets min(5 s, this))
DEADLINE = STALL + 15  # the bound from the server dying to the run having ended
BIG = 128 << 20  # bytes per file of a copy long enough to be caught in the middle


def state(root: Path) -> dict[str, tuple]:
    """Everything under root, internal files (journal, markers) included: path -> (mode, size, mtime, sha1)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            st = os.lstat(full)
            digest = ""
            if os.path.isfile(full) and not os.path.islink(full):
                with open(full, "rb") as f:
                    digest = hashlib.file_digest(f, "sha1").hexdigest()
            out[os.path.relpath(full, root)] = (st.st_mode, st.st_size, st.st_mtime_ns, digest)
    return out


STALLING = {"HA_SYNC_STALL_TIMEOUT": f"{STALL:g}"}  # the environment, not the flag: today's code ignores it


def ha_sync(src: Path, dest: Path, direction: str, tmp_path: Path, *extra: str, **kw) -> subprocess.CompletedProcess:
    return run_cli(*args(src, dest, direction, tmp_path, *extra), env={**STALLING, **kw.pop("env", {})}, **kw)


def args(src: Path, dest: Path, direction: str, tmp_path: Path, *extra: str) -> list[str]:
    return [
        *pair_args(src, dest, "media"),
        "--direction",
        direction,
        "--log-dir",
        str(tmp_path / "logs"),
        "--no-dry-run",
        *extra,
    ]


def to_hp(share: FaultyShare, hp: Path, tmp_path: Path, *extra: str, **kw) -> subprocess.CompletedProcess:
    return ha_sync(share.mountpoint, hp, "dell-to-hp", tmp_path, *extra, **kw)


def to_dell(share: FaultyShare, hp: Path, tmp_path: Path, *extra: str, **kw) -> subprocess.CompletedProcess:
    return ha_sync(hp, share.mountpoint, "hp-to-dell", tmp_path, *extra, **kw)


def start(src: Path, dest: Path, direction: str, tmp_path: Path, *extra: str, env=None) -> subprocess.Popen:
    """The run, its output to files: a worker of it still stuck in the kernel on the dead share (a FUSE or NFS
    request no signal can end, until the server answers) would hold pipes open after the run itself ended."""
    out = tmp_path / f"run-{time.monotonic_ns()}"
    with open(f"{out}.out", "w") as stdout, open(f"{out}.err", "w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "hasync_pipeline.cli", *args(src, dest, direction, tmp_path, *extra)],
            stdout=stdout,
            stderr=stderr,
            text=True,
            env={**os.environ, **STALLING, **(env or {})},
        )
    proc.output = out  # type: ignore[attr-defined]
    return proc


def ended(proc: subprocess.Popen, timeout: float | None = None) -> tuple[str, str]:
    """Wait for the run's own process (not for its children's pipes) and return what it printed."""
    proc.wait(timeout=timeout)
    out = proc.output  # type: ignore[attr-defined]
    return Path(f"{out}.out").read_text(), Path(f"{out}.err").read_text()


def wait_until(condition, proc: subprocess.Popen, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"the run ended before {what}: {ended(proc)}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.002)  # polling an observable condition, bounded by the deadline


def big_files(root: Path, count: int = 3) -> None:
    block = os.urandom(1 << 20)
    for i in range(count):
        with open(root / f"big{i}.bin", "wb") as f:
            for _ in range(BIG >> 20):
                f.write(block)


def assert_recovers(share: FaultyShare, hp: Path, tmp_path: Path) -> None:
    """The server answers again: the next cycle is an ordinary one and the two sides agree."""
    for run in (to_hp, to_dell):
        proc = run(share, hp, tmp_path, timeout=300)
        assert proc.returncode == 0, proc.stderr
        assert "first-sync" not in proc.stdout + proc.stderr  # the journal was kept: no merge mode
        assert "lease" not in proc.stderr  # none left behind
    assert snapshot(hp) == snapshot(share.mountpoint)
    assert internal_leftovers(hp) == [] and internal_leftovers(share.backing) == []


@pytest.fixture
def dell_share(tmp_path):
    with faulty_share(tmp_path / "dell-disk", tmp_path / "dell") as share:
        yield share


@pytest.fixture
def synced(dell_share, tmp_path):
    """The Dell's share (healthy) and the HP's folder, in sync both ways."""
    write(dell_share.backing / "photos" / "a.jpg", "a photo")
    write(dell_share.backing / "db" / "dump.sql", "create table t;")
    hp = tmp_path / "hp"
    hp.mkdir()
    for run in (to_hp, to_dell):
        proc = run(dell_share, hp, tmp_path)
        assert proc.returncode == 0, proc.stderr
    assert (hp / "photos" / "a.jpg").read_text() == "a photo"
    return dell_share, hp


def test_a_server_dead_before_the_runs_ends_both_directions_in_seconds_naming_it_and_changing_nothing(synced, tmp_path):
    share, hp = synced
    write(hp / "written-during-the-outage.txt", "made on the hp while the dell was away")
    before = state(hp), state(share.backing)
    share.hang()
    for run in (to_hp, to_dell):
        started = time.monotonic()
        proc = run(share, hp, tmp_path, timeout=DEADLINE + 30)  # today's code: still waiting, forever
        took = time.monotonic() - started
        assert proc.returncode == 8, proc.stderr
        assert f"dell ({share.mountpoint}) is not answering" in proc.stderr, proc.stderr
        assert "nothing changed" in proc.stderr and "Traceback" not in proc.stderr
        assert took <= DEADLINE
    assert (state(hp), state(share.backing)) == before  # the survivor, and the dead one's disk, untouched
    share.heal()
    assert_recovers(share, hp, tmp_path)
    assert (share.mountpoint / "written-during-the-outage.txt").read_text().startswith("made on the hp")


@pytest.mark.parametrize("direction", ["dell-to-hp", "hp-to-dell"])
def test_a_server_dying_mid_copy_ends_the_run_within_the_deadline_and_the_pair_recovers(synced, tmp_path, direction):
    share, hp = synced
    reading = direction == "dell-to-hp"  # the dead server is the source (else the destination)
    big_files(share.backing if reading else hp)
    src, dest = (share.mountpoint, hp) if reading else (hp, share.mountpoint)
    staged_in = hp if reading else share.backing
    survivor = state(hp)
    proc = start(src, dest, direction, tmp_path)
    wait_until(lambda: internal_leftovers(staged_in), proc, "the copy to start")
    share.hang()
    died = time.monotonic()
    try:
        _, err = ended(proc, timeout=DEADLINE + 30)  # today's code: waits for as long as the dell is away
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise
    took = time.monotonic() - died
    assert proc.returncode == 8, err
    assert f"dell ({share.mountpoint}) stopped answering: no reply for" in err and "Traceback" not in err
    assert took <= DEADLINE
    if reading:  # the HP received whole files or none: nothing of it is half a version
        for name in os.listdir(hp):
            if name.startswith("big"):
                assert (hp / name).stat().st_size == BIG
    else:
        assert state(hp) == survivor  # the survivor was only read
    share.heal()
    assert_recovers(share, hp, tmp_path)


@pytest.mark.parametrize("direction", ["dell-to-hp", "hp-to-dell"])
def test_eio_from_a_soft_mount_refuses_at_once_naming_the_root(synced, tmp_path, direction):
    share, hp = synced
    before = state(hp), state(share.backing)
    share.eio()
    started = time.monotonic()
    proc = (to_hp if direction == "dell-to-hp" else to_dell)(share, hp, tmp_path)
    assert time.monotonic() - started < DEADLINE
    assert proc.returncode == 4, proc.stderr
    assert f"{share.mountpoint} cannot be reached: Input/output error" in proc.stderr, proc.stderr
    assert (state(hp), state(share.backing)) == before
    share.heal()
    assert_recovers(share, hp, tmp_path)


def test_sigterm_while_blocked_on_a_dead_share_exits_in_seconds_and_gives_the_kubernetes_lease_back(synced, tmp_path):
    from hasync_pipeline_tests.fake_kube import FakeKube

    share, hp = synced
    big_files(share.backing)
    kube = FakeKube()
    try:
        env = {"HA_SYNC_LEASE_BACKEND": "kubernetes", "KUBECONFIG": kube.kubeconfig(str(tmp_path)), "POD_NAME": "p"}
        env["HA_SYNC_STALL_TIMEOUT"] = "600"  # only the signal ends this one
        proc = start(share.mountpoint, hp, "dell-to-hp", tmp_path, env=env)
        wait_until(lambda: internal_leftovers(hp), proc, "the copy to start")
        share.hang()
        assert share.wait_blocked(proc.pid) or internal_leftovers(hp)  # its children wait on the dead share
        assert kube.lease("ha-sync-media")["spec"]["holderIdentity"].startswith("p/")
        proc.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        try:
            _, err = ended(proc, timeout=60)  # today's code: still running, SIGKILLed by the kubelet
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise
        assert time.monotonic() - sent <= 5.0
        assert proc.returncode == 6 and "interrupted by SIGTERM" in err, err
        assert kube.lease("ha-sync-media") is None  # released: the other direction may run at once
    finally:
        kube.stop()
    share.heal()
    assert_recovers(share, hp, tmp_path)


def test_a_dead_log_folder_keeps_the_record_locally_and_the_sync_goes_on(tmp_path):
    from sqlalchemy import func, select

    from hasync_pipeline.audit import AuditStore
    from hasync_pipeline.audit.schema import sync_iterations, sync_operations

    dell, hp = tmp_path / "dell", tmp_path / "hp"
    write(dell / "a.txt", "a")
    hp.mkdir()
    with faulty_share(tmp_path / "logs-disk", tmp_path / "logs") as logs:  # the HP's NFS logs volume
        logs.hang()
        started = time.monotonic()
        proc = ha_sync(dell, hp, "dell-to-hp", tmp_path, timeout=DEADLINE + 60)
        assert time.monotonic() - started <= DEADLINE + 2 * STALL
        assert proc.returncode == 0, proc.stderr
        assert (hp / "a.txt").read_text() == "a"
        assert f"opslog folder {logs.mountpoint}" in proc.stderr and "opslog-spool" in proc.stderr, proc.stderr
        store = AuditStore()
        with store.engine.connect() as conn:
            [status] = conn.execute(select(sync_iterations.c.status)).scalars().all()
            ops = conn.execute(select(func.count()).select_from(sync_operations)).scalar()
        store.dispose()
        assert (status, ops) == ("success", 1)  # the record reached the database all the same
        logs.heal()
        write(dell / "b.txt", "b")
        proc = ha_sync(dell, hp, "dell-to-hp", tmp_path)
        assert proc.returncode == 0 and "opslog" not in proc.stderr, proc.stderr  # its folder answers again
        with store.engine.connect() as conn:
            statuses = conn.execute(select(sync_iterations.c.status)).scalars().all()
            ops = conn.execute(select(func.count()).select_from(sync_operations)).scalar()
        store.dispose()
        assert (statuses, ops) == (["success", "success"], 2)
    spool = Path(os.environ["HA_SYNC_STATE_DIR"]) / "opslog-spool"
    assert not spool.exists() or os.listdir(spool) == []  # nothing waits there: both records are in


@pytest.fixture
def nested_mount(tmp_path):
    """The Dell's pair root with a second disk (a real tmpfs) mounted at disk2 inside it."""
    dell = tmp_path / "dell"
    disk2 = dell / "disk2"
    disk2.mkdir(parents=True)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk2)], capture_output=True).returncode:
        pytest.skip("mounting a tmpfs is not permitted here")
    try:
        yield dell, disk2
    finally:
        subprocess.run(["umount", "-l", str(disk2)], capture_output=True)


def test_a_vanished_nested_mount_is_refused_both_ways_until_allowed_on_purpose(nested_mount, tmp_path):
    dell, disk2 = nested_mount
    hp = tmp_path / "hp"
    hp.mkdir()
    for i in range(10):  # the deletions stay below max_delete: that check alone would not catch it
        write(dell / f"top{i}.txt", "top")
    for i in range(3):
        write(disk2 / f"album{i}.jpg", f"photo {i}")
    for src, dest, direction in ((dell, hp, "dell-to-hp"), (hp, dell, "hp-to-dell")):
        assert ha_sync(src, dest, direction, tmp_path).returncode == 0
    assert sorted(os.listdir(hp / "disk2")) == ["album0.jpg", "album1.jpg", "album2.jpg"]
    subprocess.run(["umount", str(disk2)], check=True)  # the second disk did not come back after a reboot
    assert os.listdir(disk2) == []
    before = state(hp), state(dell)
    for src, dest, direction in ((dell, hp, "dell-to-hp"), (hp, dell, "hp-to-dell")):
        proc = ha_sync(src, dest, direction, tmp_path, "--delete-missing")  # today's: the HP's copies trashed
        assert proc.returncode == 4, proc.stderr
        assert "disk2" in proc.stderr and "was a mount point at the last sync" in proc.stderr, proc.stderr
        assert "--allow-unmounted disk2" in proc.stderr
    assert (state(hp), state(dell)) == before
    proc = ha_sync(dell, hp, "dell-to-hp", tmp_path, "--delete-missing", "--allow-unmounted", "disk2")  # on purpose
    assert proc.returncode == 0, proc.stderr
    assert os.listdir(hp / "disk2") == []  # deleted into the trash, as asked
    trashed = {name for _, _, files in os.walk(hp / ".hasync-trash") for name in files}
    assert {"album0.jpg", "album1.jpg", "album2.jpg"} <= trashed


def test_a_dagster_run_against_a_dead_server_fails_in_time_naming_it_and_alerts_so(
    dell_share,
    tmp_path,
    monkeypatch,
    received,  # received: a real webhook receiver's alerts
):
    import dagster as dg

    from hasync_pipeline.definitions import defs
    from hasync_pipeline.definitions import ha_sync as ha_sync_resource
    from hasync_pipeline.pipeline.ops import NOT_ANSWERING_TAG
    from hasync_pipeline_tests.test_pipeline import REAL, iterations, lease_is_free

    write(dell_share.backing / "media" / "film.mkv", "frames")
    hp = tmp_path / "hp"
    (hp / "media").mkdir(parents=True)
    monkeypatch.setenv("HA_SYNC_DELL_ROOT", str(dell_share.mountpoint))
    monkeypatch.setenv("HA_SYNC_HP_ROOT", str(hp))
    monkeypatch.setenv("HA_SYNC_LOG_DIR", str(tmp_path / "logs"))
    monkeypatch.setenv("HA_SYNC_WORK_DIR", str(tmp_path / "work"))
    monkeypatch.setenv("HA_SYNC_STALL_TIMEOUT", f"{STALL:g}")
    instance = dg.DagsterInstance.ephemeral()
    dell_share.hang()
    started = time.monotonic()
    result = defs.get_job_def("media_dell_to_hp").execute_in_process(
        run_config=REAL, instance=instance, raise_on_error=False
    )
    assert time.monotonic() - started <= DEADLINE
    assert not result.success and lease_is_free("media")
    assert instance.get_run_by_id(result.run_id).tags[NOT_ANSWERING_TAG] == "dell"  # what the alert reads
    [it] = iterations()
    assert it["status"] == "failed" and f"dell ({dell_share.mountpoint}/media) is not answering" in it["error_message"]
    sensor = defs.resolve_sensor_def("ha_sync_failure_alert")
    [failure] = [r.dagster_event for r in instance.all_logs(result.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)]
    ctx = dg.build_run_status_sensor_context(
        sensor_name=sensor.name,
        dagster_event=failure,
        dagster_instance=instance,
        dagster_run=instance.get_run_by_id(result.run_id),
        resources={"ha_sync": ha_sync_resource},
    )
    sensor(ctx.for_run_failure())
    [alert] = received  # by a real webhook receiver
    assert alert["subject"] == "HA Sync: media_dell_to_hp failed: dell not answering"
    assert "is not answering" in alert["text"]
    assert snapshot(hp / "media") == {}


def test_dagster_job_execute_against_a_dead_destination_ends_by_itself(dell_share, tmp_path):
    from hasync_pipeline_tests.test_dagster_commands import BIN, dagster_env

    env = dagster_env(tmp_path)  # makes tmp_path/dell/media: the share's mount point is tmp_path/dell
    write(tmp_path / "hp" / "media" / "poster.jpg", "poster")
    real = tmp_path / "real.yaml"
    real.write_text("ops:\n  acquire_lease:\n    config:\n      dry_run: false\n")
    dell_share.hang()
    proc = subprocess.run(
        [BIN / "dagster", "job", "execute", "-j", "media_hp_to_dell", "-c", str(real)],
        cwd=tmp_path,
        env={**env, "HA_SYNC_STALL_TIMEOUT": f"{STALL:g}"},
        capture_output=True,
        text=True,
        timeout=300,  # today's code: never ends
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "RUN_FAILURE" in out
    assert f"dell ({dell_share.mountpoint}/media) is not answering" in out
    dell_share.heal()
    assert os.listdir(dell_share.backing / "media") == []
