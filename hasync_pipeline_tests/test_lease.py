"""Leases: the real `kubernetes` client against our Lease API server, and the local backend across
processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from kubernetes import client

from hasync_pipeline.engine import run_sync
from hasync_pipeline.lease import LeaseHeld, LeaseLost
from hasync_pipeline.lease.kube import acquire_kube
from hasync_pipeline.lease.local import acquire_local
from hasync_pipeline_tests.conftest import internal_leftovers, options, pair_args, run_cli, snapshot, write
from hasync_pipeline_tests.fake_kube import FakeKube

NS = "infrastructure"


@pytest.fixture
def kube():
    server = FakeKube()
    yield server
    server.stop()


def api_for(server: FakeKube) -> client.CoordinationV1Api:
    cfg = client.Configuration()
    cfg.host = server.url
    return client.CoordinationV1Api(client.ApiClient(cfg))


def wait_for(condition, timeout=30.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)  # polling an observable condition, bounded by the deadline


# ---- Kubernetes backend --------------------------------------------------------------------------


def test_fake_server_speaks_the_lease_api_semantics(kube):
    api = api_for(kube)
    body = client.V1Lease(metadata=client.V1ObjectMeta(name="x"), spec=client.V1LeaseSpec(holder_identity="a"))
    created = api.create_namespaced_lease(NS, body)
    with pytest.raises(client.ApiException) as e:
        api.create_namespaced_lease(NS, body)
    assert e.value.status == 409 and "AlreadyExists" in e.value.body
    created.metadata.resource_version = None
    with pytest.raises(client.ApiException) as e:
        api.replace_namespaced_lease("x", NS, created)
    assert e.value.status == 422
    created.metadata.resource_version = "999"
    with pytest.raises(client.ApiException) as e:
        api.replace_namespaced_lease("x", NS, created)
    assert e.value.status == 409 and "Conflict" in e.value.body
    with pytest.raises(client.ApiException) as e:
        api.read_namespaced_lease("nope", NS)
    assert e.value.status == 404


@pytest.mark.slow
def test_twenty_concurrent_acquirers_exactly_one_wins(kube):
    results: list = []
    start = threading.Barrier(20)

    def contend(i):
        api = api_for(kube)
        start.wait()
        try:
            results.append(acquire_kube("media", f"pod-{i}/run", 60, api=api, namespace=NS))
        except LeaseHeld as exc:
            results.append(exc)

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [r for r in results if not isinstance(r, LeaseHeld)]
    assert len(winners) == 1 and len(results) == 20
    assert kube.lease("ha-sync-media")["spec"]["holderIdentity"] == winners[0].holder
    assert all(r.holder == winners[0].holder for r in results if isinstance(r, LeaseHeld))
    winners[0].release()
    assert kube.lease("ha-sync-media") is None


def test_lease_fields_as_the_seed_says(kube):
    lease = acquire_kube("photos", "pod-a/run-1", 3600, api=api_for(kube), namespace=NS)
    spec = kube.lease("ha-sync-photos")["spec"]
    assert spec["holderIdentity"] == "pod-a/run-1" and spec["leaseDurationSeconds"] == 3600
    assert spec["acquireTime"] and spec["renewTime"]
    lease.release()


def test_expired_lease_is_taken_over_and_the_old_holder_knows_it_lost(kube):
    old = acquire_kube("media", "pod-old/run", 60, api=api_for(kube), namespace=NS, renew_every=3600)
    with pytest.raises(LeaseHeld, match="held by pod-old/run since"):
        acquire_kube("media", "pod-new/run", 60, api=api_for(kube), namespace=NS)
    kube.age("ha-sync-media", 120)  # two minutes without renewal: expired
    new = acquire_kube("media", "pod-new/run", 60, api=api_for(kube), namespace=NS)
    assert kube.lease("ha-sync-media")["spec"]["holderIdentity"] == "pod-new/run"
    assert kube.lease("ha-sync-media")["spec"]["leaseTransitions"] == 1
    with pytest.raises(LeaseLost, match="taken over by pod-new/run"):
        old.check()
    old.release()  # never deletes a lease it does not hold
    assert kube.lease("ha-sync-media")["spec"]["holderIdentity"] == "pod-new/run"
    new.release()


def test_a_lease_whose_holder_pod_is_gone_counts_as_expired_and_nothing_else_does(kube, monkeypatch):
    monkeypatch.setenv("POD_NAME", "run-pod-1")
    first = acquire_kube("ai", "run-pod-1/run", 3600, api=api_for(kube), namespace=NS, renew_every=3600)
    assert kube.lease("ha-sync-ai")["metadata"]["annotations"] == {"ha-sync.vandachevici.ro/holder-pod": "run-pod-1"}
    monkeypatch.setenv("POD_NAME", "run-pod-2")
    kube.pods[(NS, "run-pod-1")] = "Running"
    with pytest.raises(LeaseHeld, match="held by run-pod-1/run"):  # alive: held, for all its ttl
        acquire_kube("ai", "run-pod-2/run", 3600, api=api_for(kube), namespace=NS, retries=0)
    del kube.pods[(NS, "run-pod-1")]
    for code in (403, 500):  # no right to read pods, or an API in trouble: cannot tell, so it is held
        kube.pod_failures = [code]
        with pytest.raises(LeaseHeld):
            acquire_kube("ai", "run-pod-2/run", 3600, api=api_for(kube), namespace=NS, retries=0)
    assert kube.pod_failures == [] and kube.count("GET pod", "run-pod-1") == 3
    kube.pods[(NS, "run-pod-1")] = "Succeeded"
    taken = acquire_kube("ai", "run-pod-2/run", 3600, api=api_for(kube), namespace=NS, renew_every=3600)
    assert taken.note == "took over lease ha-sync-ai from run-pod-1/run: its pod run-pod-1 no longer runs"
    assert kube.lease("ha-sync-ai")["metadata"]["annotations"] == {"ha-sync.vandachevici.ro/holder-pod": "run-pod-2"}
    with pytest.raises(LeaseLost):
        first.check()
    taken.release()
    del kube.pods[(NS, "run-pod-1")]  # gone altogether (deleted): 404 counts as gone too
    monkeypatch.setenv("POD_NAME", "run-pod-1")
    again = acquire_kube("ai", "run-pod-1/run2", 3600, api=api_for(kube), namespace=NS, renew_every=3600)
    monkeypatch.setenv("POD_NAME", "run-pod-3")
    after = acquire_kube("ai", "run-pod-3/run", 3600, api=api_for(kube), namespace=NS, renew_every=3600)
    assert after.note is not None and "its pod run-pod-1 no longer runs" in after.note
    again.release()
    after.release()
    assert kube.lease("ha-sync-ai") is None


def test_heartbeat_renews_and_tolerates_server_errors(kube):
    lease = acquire_kube("games", "pod/run", 60, api=api_for(kube), namespace=NS, renew_every=0.05)
    wait_for(lambda: lease.renewals >= 3, what="three renewals")
    first = kube.lease("ha-sync-games")["spec"]["renewTime"]
    kube.failures.extend([503, 500, 503])
    wait_for(lambda: not kube.failures and lease.renewals >= 6, what="renewals after the 5xx errors")
    assert kube.lease("ha-sync-games")["spec"]["renewTime"] != first
    lease.check()  # still ours
    lease.release()


def test_stolen_lease_stops_further_changes(kube, pair):
    dell, hp = pair
    for i in range(5):
        write(dell / f"f{i}", "x")
    lease = acquire_kube("media", "pod/run-victim", 60, api=api_for(kube), namespace=NS, renew_every=3600)

    def steal(plan):
        kube.edit("ha-sync-media", holderIdentity="pod/thief")
        return True

    with pytest.raises(LeaseLost, match="thief"):
        run_sync(str(dell), str(hp), options(), "r", on_plan=steal, take_lease=lambda: lease)
    assert snapshot(hp) == {}
    lease.release()
    assert kube.lease("ha-sync-media")["spec"]["holderIdentity"] == "pod/thief"


def cli_env(kube, tmp_path):
    return {"HA_SYNC_LEASE_BACKEND": "kubernetes", "KUBECONFIG": kube.kubeconfig(str(tmp_path)), "POD_NAME": "test-pod"}


def big_source(dell, count=3, mib=128):
    block = os.urandom(1 << 20)
    for i in range(count):
        with open(dell / f"big{i}.bin", "wb") as f:
            for _ in range(mib):
                f.write(block)


def start_cli(dell, hp, tmp_path, env):
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hasync_pipeline.cli",
            *pair_args(dell, hp, "media"),
            "--log-dir",
            str(tmp_path / "logs"),
            "--lock-ttl",
            "60",
            "--no-dry-run",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **env},
    )


@pytest.mark.slow
def test_sigterm_releases_the_kubernetes_lease_and_leaves_no_temp_files(kube, pair, tmp_path):
    dell, hp = pair
    big_source(dell)
    proc = start_cli(dell, hp, tmp_path, cli_env(kube, tmp_path))
    wait_for(
        lambda: kube.lease("ha-sync-media") is not None and internal_leftovers(hp) or proc.poll() is not None,
        what="the copy to start",
    )
    assert proc.poll() is None, proc.communicate()
    assert kube.lease("ha-sync-media")["spec"]["holderIdentity"].startswith("test-pod/")
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 6, err
    assert kube.lease("ha-sync-media") is None  # released
    assert internal_leftovers(hp) == []


@pytest.mark.slow
def test_a_sigkilled_holder_blocks_its_pair_while_its_pod_runs_and_not_once_the_pod_has_ended(kube, pair, tmp_path):
    """No lease outlives its holder: SIGKILL leaves the Lease behind (lock_ttl, an hour), but once the
    holder's pod has ended (here: Failed, as a killed run pod is) the next run takes it over at once."""
    dell, hp = pair
    big_source(dell)
    env = cli_env(kube, tmp_path)
    kube.pods[(NS, "test-pod")] = "Running"
    proc = start_cli(dell, hp, tmp_path, env)
    wait_for(
        lambda: kube.lease("ha-sync-media") is not None and internal_leftovers(hp) or proc.poll() is not None,
        what="the copy to start",
    )
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    lease = kube.lease("ha-sync-media")
    dead_holder = lease["spec"]["holderIdentity"]
    assert lease["metadata"]["annotations"] == {"ha-sync.vandachevici.ro/holder-pod": "test-pod"}
    blocked = run_cli(
        *pair_args(dell, hp, "media"),
        "--log-dir",
        str(tmp_path / "logs"),
        "--no-dry-run",
        env={**env, "POD_NAME": "second-pod"},
    )
    assert blocked.returncode == 5 and dead_holder in blocked.stderr and "since" in blocked.stderr
    kube.pods[(NS, "test-pod")] = "Failed"  # the kubelet has noticed: the pod's one container was killed
    again = run_cli(
        *pair_args(dell, hp, "media"),
        "--log-dir",
        str(tmp_path / "logs"),
        "--no-dry-run",
        env={**env, "POD_NAME": "second-pod"},
    )
    assert again.returncode == 0, again.stderr
    assert f"took over lease ha-sync-media from {dead_holder}: its pod test-pod no longer runs" in again.stdout
    assert snapshot(hp) == snapshot(dell) and internal_leftovers(hp) == []
    assert kube.lease("ha-sync-media") is None


# ---- local backend -------------------------------------------------------------------------------


def test_local_lease_one_winner_among_processes(tmp_path):
    go_r, go_w = os.pipe()
    done_r, done_w = os.pipe()
    pids = []
    for i in range(10):
        pid = os.fork()
        if pid == 0:
            os.read(go_r, 1)
            try:
                acquire_local(str(tmp_path), "media", f"proc-{i}/run", 60)
            except LeaseHeld:
                os._exit(3)
            os.read(done_r, 1)  # the winner keeps holding until the parent has counted the losers
            os._exit(0)
        pids.append(pid)
    os.write(go_w, b"g" * 10)
    codes = []
    while len(codes) < 9:
        _, status = os.waitpid(-1, 0)
        codes.append(os.waitstatus_to_exitcode(status))
    os.write(done_w, b"d")
    _, status = os.waitpid(-1, 0)
    codes.append(os.waitstatus_to_exitcode(status))
    assert sorted(codes) == [0] + [3] * 9


def test_local_lease_held_dead_and_stolen(tmp_path):
    first = acquire_local(str(tmp_path), "infra", "me/run-1", 60)
    with pytest.raises(LeaseHeld, match="held by me/run-1"):
        acquire_local(str(tmp_path), "infra", "other/run-2", 60)
    # a holder process that died (SIGKILL) on this machine: taken over at once
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    import json

    path = tmp_path / "leases" / "ha-sync-infra.json"
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, "holder": "dead/run", "pid": pid}))
    with pytest.raises(LeaseLost, match="dead/run"):
        first.check()  # and the first holder sees it lost its lease
    second = acquire_local(str(tmp_path), "infra", "other/run-2", 60)
    first.release()  # not ours any more: left alone
    assert json.loads(path.read_text())["holder"] == "other/run-2"
    second.release()
    assert path.read_text() == ""


@pytest.mark.slow
def test_cli_with_a_held_local_lease_exits_5_and_changes_nothing(pair, tmp_path):
    from hasync_pipeline.settings import deployment

    dell, hp = pair
    write(dell / "a", "a")
    holder = acquire_local(deployment().state_dir, "media", "someone-else/run-9", 60)
    proc = run_cli(*pair_args(dell, hp, "media"), "--log-dir", str(tmp_path / "logs"), "--no-dry-run")
    assert proc.returncode == 5
    assert "lease ha-sync-media is held by someone-else/run-9 since" in proc.stderr
    assert snapshot(hp) == {}
    holder.release()
    assert (
        run_cli(
            *pair_args(dell, hp, "media"),
            "--log-dir",
            str(tmp_path / "logs"),
            "--no-dry-run",
        ).returncode
        == 0
    )


@pytest.mark.slow
def test_cli_says_clearly_when_no_lease_can_be_taken(pair, tmp_path):
    dell, hp = pair
    write(dell / "a", "a")
    base = (
        *pair_args(dell, hp, "media"),
        "--log-dir",
        str(tmp_path / "logs"),
        "--no-dry-run",
    )
    bad = run_cli(*base, env={"HA_SYNC_LEASE_BACKEND": "etcd"})
    assert bad.returncode == 2 and "HA_SYNC_LEASE_BACKEND: 'etcd' is not one of kubernetes, local" in bad.stderr
    unreachable = run_cli(
        *base, env={"HA_SYNC_LEASE_BACKEND": "kubernetes", "KUBECONFIG": str(tmp_path / "missing-kubeconfig")}
    )
    assert (
        unreachable.returncode == 1 and "cannot take the lease ha-sync-media, nothing changed: " in unreachable.stderr
    )
    assert "Traceback" not in unreachable.stderr and snapshot(hp) == {}
