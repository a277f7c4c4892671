"""Deployment, offline: the kustomization builds and validates, says what the seed says, the run pod that
dagster-k8s would create for media_dell_to_hp mounts the right volumes, the instance config loads, and
every command the image runs exists and works in a clean virtualenv built from the lock file."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PAIRS = tomllib.loads((REPO / "hasync_pipeline" / "pairs.toml").read_text())["pairs"]
SERVERS = {"dell": "192.168.2.100", "hp": "192.168.2.193"}


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, list[dict]]:
    proc = subprocess.run(
        [BIN / "kubectl", "kustomize", str(REPO / "k8s")], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    path = tmp_path_factory.mktemp("k8s") / "all.yaml"
    path.write_text(proc.stdout)
    return path, [d for d in yaml.safe_load_all(proc.stdout) if d]


def of_kind(docs, kind):
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def test_kustomization_passes_strict_validation_for_a_current_kubernetes(built):
    path, _ = built
    proc = subprocess.run(
        [BIN / "kubernetes-validate", "--strict", "-k", "1.33.0", str(path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "passed" in proc.stdout + proc.stderr


def test_storage_is_the_seeds(built):
    _, docs = built
    pvs, pvcs = of_kind(docs, "PersistentVolume"), of_kind(docs, "PersistentVolumeClaim")
    assert len(pvs) == 13 and len(pvcs) == 13
    for pair, body in PAIRS.items():
        for side, server in SERVERS.items():
            pv = pvs[f"pv-{side}-{pair}"]["spec"]
            assert pv["nfs"] == {"server": server, "path": f"/data/{pair}"}
            assert pv["capacity"]["storage"] == body["capacity"] and pv["accessModes"] == ["ReadWriteMany"]
            assert pv["storageClassName"] == ""
            pvc = pvcs[f"pvc-{side}-{pair}"]
            assert pvc["spec"]["volumeName"] == f"pv-{side}-{pair}" and pvc["spec"]["storageClassName"] == ""
            assert pvc["metadata"]["namespace"] == "infrastructure"
    assert {p: b["capacity"] for p, b in PAIRS.items()} == {
        "media": "2Ti",
        "photos": "500Gi",
        "owncloud": "500Gi",
        "games": "500Gi",
        "infra": "100Gi",
        "ai": "500Gi",
    }
    logs = pvs["pv-ha-sync-logs"]["spec"]
    assert logs["nfs"] == {"server": "192.168.2.193", "path": "/data/infra/ha-sync-logs"}
    assert logs["capacity"]["storage"] == "10Gi"
    assert pvcs["pvc-ha-sync-logs"]["spec"]["volumeName"] == "pv-ha-sync-logs"


def test_rbac_namespace_and_no_cronjobs(built):
    _, docs = built
    assert not [d for d in docs if d["kind"] == "CronJob"]
    for d in docs:
        if d["kind"] != "PersistentVolume":
            assert d["metadata"]["namespace"] == "infrastructure", d["metadata"]["name"]
    [role] = of_kind(docs, "Role").values()
    rules = {(tuple(r["apiGroups"]), tuple(r["resources"])): set(r["verbs"]) for r in role["rules"]}
    assert rules[(("coordination.k8s.io",), ("leases",))] == {"get", "create", "update", "delete"}
    assert rules[(("batch",), ("jobs",))] >= {"create", "get", "list", "watch", "delete"}
    assert rules[(("",), ("pods",))] >= {"get", "list", "watch"} and rules[(("",), ("pods/log",))] >= {"get"}
    [binding] = of_kind(docs, "RoleBinding").values()
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "ha-sync", "namespace": "infrastructure"}]
    ingress = of_kind(docs, "Ingress")["ha-sync"]
    assert ingress["spec"]["rules"][0]["host"] == "ha-sync.vandachevici.ro"
    assert "cert-manager.io/cluster-issuer" in ingress["metadata"]["annotations"]
    services = of_kind(docs, "Service")
    assert services["ha-sync-ui"]["spec"]["ports"][0]["port"] == 8080
    deployments = of_kind(docs, "Deployment")
    assert set(deployments) == {"dagster-webserver", "dagster-daemon", "ha-sync-ui"}
    for d in deployments.values():
        [container] = d["spec"]["template"]["spec"]["containers"]
        assert container["image"] == "192.168.2.100:5000/ha-sync:latest"
        assert {"secretRef": {"name": "ha-sync-db-secret"}} in container["envFrom"]


def instance_config(docs) -> dict:
    return yaml.safe_load(of_kind(docs, "ConfigMap")["dagster-instance"]["data"]["dagster.yaml"])


def test_instance_config_loads_as_a_dagster_instance_config(built, tmp_path, monkeypatch):
    from dagster._core.instance.config import dagster_instance_config

    _, docs = built
    (tmp_path / "dagster.yaml").write_text(of_kind(docs, "ConfigMap")["dagster-instance"]["data"]["dagster.yaml"])
    monkeypatch.setenv("DAGSTER_MYSQL_URL", "mysql+mysqlconnector://u:p@db:3306/general_db")
    monkeypatch.setenv("HA_SYNC_IMAGE", "example/ha-sync:1")
    config, _ = dagster_instance_config(str(tmp_path))
    assert config["run_launcher"]["class"] == "K8sRunLauncher"
    assert config["storage"]["mysql"]["mysql_url"] == {"env": "DAGSTER_MYSQL_URL"}
    limits = config["run_coordinator"]["config"]["tag_concurrency_limits"]
    assert {"key": "ha-sync/pair", "value": {"applyLimitPerUniqueValue": True}, "limit": 1} in limits


def test_the_run_pod_for_media_dell_to_hp_mounts_exactly_its_volumes(built, monkeypatch, tmp_path):
    """Built by dagster-k8s's own code: the launcher configured from our ConfigMap, the run's tags from the job."""
    from dagster import DagsterRun
    from dagster._config import process_config
    from dagster_k8s.container_context import K8sContainerContext
    from dagster_k8s.job import construct_dagster_k8s_job
    from dagster_k8s.launcher import K8sRunLauncher

    from hasync_pipeline.definitions import defs

    _, docs = built
    monkeypatch.setenv("HA_SYNC_IMAGE", "192.168.2.100:5000/ha-sync:latest")
    monkeypatch.setenv("HA_SYNC_DRY_RUN", "true")  # passed through from the daemon (see dagster.yaml env)
    kubeconfig = tmp_path / "kubeconfig"  # never contacted: only the launcher's constructor wants one
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "c",
                "clusters": [{"name": "k", "cluster": {"server": "http://127.0.0.1:9"}}],
                "users": [{"name": "u", "user": {}}],
                "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],
            }
        )
    )
    config = process_config(K8sRunLauncher.config_type(), instance_config(docs)["run_launcher"]["config"]).value
    launcher = K8sRunLauncher(
        **{**config, "load_incluster_config": False, "kubeconfig_file": str(kubeconfig)}, k8s_client_batch_api=object()
    )
    run = DagsterRun(job_name="media_dell_to_hp", run_id="0" * 32, tags=dict(defs.get_job_def("media_dell_to_hp").tags))
    context = K8sContainerContext.create_for_run(run, launcher, include_run_tags=True)
    job = construct_dagster_k8s_job(
        context.get_k8s_job_config(job_image=None, run_launcher=launcher),
        ["dagster", "api", "execute_run", "{}"],
        "dagster-run-x",
        user_defined_k8s_config=context.run_k8s_config,
    ).to_dict()
    pod = job["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["image"] == "192.168.2.100:5000/ha-sync:latest"
    assert pod["service_account_name"] == "ha-sync"
    assert "ha-sync-db-secret" in [e["secret_ref"]["name"] for e in container["env_from"] if e.get("secret_ref")]
    claims = {
        v["name"]: v["persistent_volume_claim"]["claim_name"]
        for v in pod["volumes"]
        if v.get("persistent_volume_claim")
    }
    mounts = {m["name"]: m["mount_path"] for m in container["volume_mounts"]}
    by_claim = {claims[name]: path for name, path in mounts.items() if name in claims}
    assert by_claim == {
        "pvc-dell-media": "/mnt/dell/media",
        "pvc-hp-media": "/mnt/hp/media",
        "pvc-ha-sync-logs": "/var/log/ha-sync",
    }
    assert pod["security_context"]["run_as_user"] == 0
    assert {"name": "HA_SYNC_DRY_RUN", "value": "true"} in [
        {k: e[k] for k in ("name", "value")} for e in container["env"]
    ]
    assert set(by_claim) <= set(of_kind(docs, "PersistentVolumeClaim"))  # and the manifests have those claims


def dockerfile_commands() -> list[list[str]]:
    text = (REPO / "Dockerfile").read_text()
    return [json.loads(m) for m in re.findall(r"^(?:ENTRYPOINT|CMD|HEALTHCHECK[^\[]*CMD)\s+(\[.*\])$", text, re.M)]


def test_dockerfile_copies_files_that_exist_and_names_real_executables():
    text = (REPO / "Dockerfile").read_text()
    for line in re.findall(r"^COPY (?!--from)(.+)$", text, re.M):
        for src in line.split()[:-1]:
            assert (REPO / src).exists(), src
    commands = dockerfile_commands()
    assert ["ha-sync-entrypoint"] in commands
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert {"ha-sync", "ha-sync-ui", "ha-sync-entrypoint"} <= set(scripts)
    for cmd in commands:
        assert cmd[0] in scripts or cmd[0] in ("python", "dagster-webserver"), cmd


@pytest.fixture(scope="module")
def image_venv(tmp_path_factory) -> Path:
    """What the Dockerfile's build stage does: a fresh venv, the package with the locked dependencies."""
    venv = tmp_path_factory.mktemp("image") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    proc = subprocess.run(
        [venv / "bin" / "pip", "install", "-q", "--constraint", REPO / ".ci" / "requirements.lock", str(REPO)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return venv


@pytest.mark.slow
def test_every_command_the_image_runs_works_in_a_clean_venv(image_venv, built, tmp_path):
    bin_dir = image_venv / "bin"
    env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "DAGSTER_HOME": str(tmp_path),
        "DAGSTER_MODULE_NAME": "hasync_pipeline.definitions",
        "HA_SYNC_DB_DSN": "u:p@ss@tcp(db.infrastructure.svc:3306)/general_db?parseTime=true",
    }
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    commands = [cmd for cmd in dockerfile_commands() if cmd != ["ha-sync-entrypoint"]]
    for d in of_kind(built[1], "Deployment").values():  # what the manifests run in the image
        commands.append(d["spec"]["template"]["spec"]["containers"][0]["args"][:1] + ["--help"])
    for cmd in commands:
        if cmd[0] != "python":
            cmd = [cmd[0], "--help"]
        proc = subprocess.run(
            [bin_dir / "ha-sync-entrypoint", *cmd], env=env, capture_output=True, text=True, timeout=300
        )
        assert proc.returncode == 0, (cmd, proc.stderr[-2000:])
    shown = subprocess.run(
        [bin_dir / "ha-sync-entrypoint", "python", "-c", "import os; print(os.environ['DAGSTER_MYSQL_URL'])"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (
        shown.stdout.strip() == "mysql+mysqlconnector://u:p%40ss@db.infrastructure.svc:3306/general_db?charset=utf8mb4"
    )
    missing = subprocess.run(
        [bin_dir / "ha-sync-entrypoint", "no-such-command"], env=env, capture_output=True, text=True
    )
    assert missing.returncode == 127 and "cannot run no-such-command" in missing.stderr
