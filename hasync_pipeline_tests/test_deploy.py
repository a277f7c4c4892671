"""Deployment, offline: the kustomization builds and validates, says what the seed says, the run pod that
dagster-k8s would create for media_dell_to_hp mounts the right volumes, the instance config loads, and
every command the image runs exists and works in a clean virtualenv built from the lock file."""

from __future__ import annotations

import json
import os
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


@pytest.mark.slow
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


def test_namespace_no_cronjobs_and_one_immutable_image_everywhere(built):
    _, docs = built
    assert not [d for d in docs if d["kind"] == "CronJob"]
    for d in docs:
        if d["kind"] != "PersistentVolume":
            assert d["metadata"]["namespace"] == "infrastructure", d["metadata"]["name"]
    deployments = of_kind(docs, "Deployment")
    assert set(deployments) == {"dagster-code", "dagster-webserver", "dagster-daemon", "ha-sync-ui"}
    images = {c["image"] for d in deployments.values() for c in d["spec"]["template"]["spec"]["containers"]}
    [image] = images
    assert image.startswith("192.168.2.100:5000/ha-sync:") and not image.endswith(":latest")  # immutable
    [code] = deployments["dagster-code"]["spec"]["template"]["spec"]["containers"]
    assert {"name": "DAGSTER_CURRENT_IMAGE", "value": image} in code["env"]  # what its run pods get
    assert "job_image" not in instance_config(docs)["run_launcher"]["config"]
    ingress = of_kind(docs, "Ingress")["ha-sync"]
    assert ingress["spec"]["rules"][0]["host"] == "ha-sync.vandachevici.ro"
    assert "cert-manager.io/cluster-issuer" in ingress["metadata"]["annotations"]
    assert of_kind(docs, "Service")["ha-sync-ui"]["spec"]["ports"][0]["port"] == 8080


def test_no_long_running_pod_mounts_a_server_s_share(built):
    """The UI, the daemon, the code server and the dashboard must keep working while a server is dead: none
    mounts an NFS claim (a pod whose NFS server is dead cannot even start; a read of it hangs).  Only run
    pods do, and those end by themselves (stall_timeout)."""
    _, docs = built
    for name, deployment in of_kind(docs, "Deployment").items():
        claims = [v for v in deployment["spec"]["template"]["spec"].get("volumes", []) if "persistentVolumeClaim" in v]
        assert claims == [], name


def test_the_change_feed_component_watches_each_pair_on_the_server_nodes_and_needs_nothing_else(tmp_path):
    from hasync_pipeline.pairs import load_registry

    docs = build(["change-feed"], tmp_path)
    for server in ("dell", "hp"):
        daemonset = of_kind(docs, "DaemonSet")[f"ha-sync-watch-{server}"]["spec"]
        labels = daemonset["template"]["metadata"]["labels"]
        assert daemonset["selector"]["matchLabels"].items() <= labels.items()
        watch = daemonset["template"]["spec"]
        [container] = watch["containers"]
        assert container["args"][:4] == ["ha-sync", "watch", "--server", server]
        assert container["args"][4:] == [f"/data/{pair.name}" for pair in load_registry().pairs]  # the exports
        nodes = watch["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        [expression] = nodes["nodeSelectorTerms"][0]["matchExpressions"]
        assert expression == {"key": "ha-sync.vandachevici.ro/server", "operator": "In", "values": [server]}
        assert watch["automountServiceAccountToken"] is False and watch["serviceAccountName"] == "ha-sync-none"
        assert watch["volumes"] == [{"name": "data", "hostPath": {"path": "/data", "type": "Directory"}}]
        assert container["envFrom"] == [{"secretRef": {"name": "ha-sync-db-secret"}}]  # to publish its tips
        assert container["securityContext"]["readOnlyRootFilesystem"] is True and container["resources"]["limits"]


def allowed(docs, account: str) -> set[tuple[str, str, str | None]]:
    """(resource, verb, name or None for any) that a service account may do, from the Roles bound to it."""
    roles = of_kind(docs, "Role")
    found = set()
    for binding in of_kind(docs, "RoleBinding").values():
        if not any(s["kind"] == "ServiceAccount" and s["name"] == account for s in binding["subjects"]):
            continue
        for rule in roles[binding["roleRef"]["name"]]["rules"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    for name in rule.get("resourceNames") or [None]:
                        found.add((resource, verb, name))
    return found


def test_four_accounts_each_with_the_least_it_needs(built):
    _, docs = built
    launcher, run = allowed(docs, "ha-sync-launcher"), allowed(docs, "ha-sync-run")
    assert {("jobs", v, None) for v in ("create", "get", "list", "watch", "delete")} <= launcher
    assert ("pods/log", "get", None) in launcher and not any(r == "leases" for r, _, _ in launcher)
    webserver = allowed(docs, "ha-sync-webserver")  # queues runs, may stop one; only the daemon launches
    assert ("jobs", "delete", None) in webserver and ("pods/log", "get", None) in webserver
    assert not any(verb in ("create", "update", "patch") for _, verb, _ in webserver)
    pairs = [f"ha-sync-{pair}" for pair in PAIRS]
    leases = {("leases", "create", None)} | {("leases", v, n) for v in ("get", "update", "delete") for n in pairs}
    assert run == leases | {("pods", "get", None)}  # a lease whose holder's pod is gone counts as expired
    assert allowed(docs, "ha-sync-none") == set()
    accounts = of_kind(docs, "ServiceAccount")
    assert accounts["ha-sync-none"]["automountServiceAccountToken"] is False
    specs = {name: d["spec"]["template"]["spec"] for name, d in of_kind(docs, "Deployment").items()}
    assert specs["dagster-daemon"]["serviceAccountName"] == "ha-sync-launcher"
    assert specs["dagster-webserver"]["serviceAccountName"] == "ha-sync-webserver"
    for name in ("ha-sync-ui", "dagster-code"):  # no token: no API access
        assert specs[name]["serviceAccountName"] == "ha-sync-none"
        assert specs[name]["automountServiceAccountToken"] is False
    assert instance_config(docs)["run_launcher"]["config"]["service_account_name"] == "ha-sync-run"


def build(components: list[str], tmp_path: Path) -> list[dict]:
    """The kustomization with optional components added, as an operator would."""
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": [os.path.relpath(REPO / "k8s", overlay)],
                "components": [os.path.relpath(REPO / "k8s" / "components" / c, overlay) for c in components],
            }
        )
    )
    proc = subprocess.run([BIN / "kubectl", "kustomize", str(overlay)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


@pytest.mark.parametrize(
    "components", [[], ["dagster-ui-lan"], ["dagster-ui-lan", "dashboard-auth", "db-network-policy"]]
)
def test_no_ingress_reaches_the_dagster_ui_without_authentication(components, tmp_path):
    """The Dagster UI can launch a run with dry_run off and has no login of its own: an Ingress may route to it
    only with authentication in front, and from the LAN only."""
    docs = build(components, tmp_path)
    routed_to_dagster = 0
    for ingress in of_kind(docs, "Ingress").values():
        annotations = ingress["metadata"].get("annotations") or {}
        backends = {p["backend"]["service"]["name"] for rule in ingress["spec"]["rules"] for p in rule["http"]["paths"]}
        if "dagster-webserver" in backends:
            routed_to_dagster += 1
            assert annotations.get("nginx.ingress.kubernetes.io/auth-type") == "basic", ingress["metadata"]["name"]
            assert annotations.get("nginx.ingress.kubernetes.io/auth-secret")
            assert "192.168.0.0/16" in annotations["nginx.ingress.kubernetes.io/whitelist-source-range"]
    assert routed_to_dagster == (1 if components else 0)
    if "db-network-policy" in components:  # the database answers HA Sync's pods only, on its port
        [rule] = of_kind(docs, "NetworkPolicy")["general-purpose-db-from-ha-sync"]["spec"]["ingress"]
        assert rule["ports"] == [{"port": 3306, "protocol": "TCP"}]
    public = of_kind(docs, "Ingress")["ha-sync"]
    dashboard_auth = (public["metadata"].get("annotations") or {}).get("nginx.ingress.kubernetes.io/auth-type")
    assert dashboard_auth == ("basic" if "dashboard-auth" in components else None)


def test_the_code_server_answers_only_dagster_and_every_container_has_probes_and_limits(built):
    _, docs = built
    policy = of_kind(docs, "NetworkPolicy")["dagster-code"]
    sources = policy["spec"]["ingress"][0]["from"]
    [only] = sources  # not the run pods: they load their job from the image, not from the code server
    assert only["podSelector"]["matchExpressions"][0]["values"] == ["dagster-webserver", "dagster-daemon"]
    deployments = of_kind(docs, "Deployment")
    for name, d in deployments.items():
        [c] = d["spec"]["template"]["spec"]["containers"]
        assert c["resources"]["requests"] and c["resources"]["limits"]["memory"], name
        assert "livenessProbe" in c, name
    [migrate] = deployments["dagster-daemon"]["spec"]["template"]["spec"]["initContainers"]
    assert migrate["args"] == ["dagster", "instance", "migrate"]  # every new image: Dagster's storage migrated
    assert migrate["volumeMounts"][0]["mountPath"] == "/opt/dagster/home/dagster.yaml" and migrate["envFrom"]
    daemon = deployments["dagster-daemon"]["spec"]["template"]["spec"]["containers"][0]
    assert daemon["livenessProbe"]["exec"]["command"] == ["dagster-daemon", "liveness-check"]
    code = deployments["dagster-code"]["spec"]["template"]["spec"]["containers"][0]
    assert code["readinessProbe"]["exec"]["command"][:3] == ["dagster", "api", "grpc-health-check"]
    for name in ("dagster-webserver", "dagster-daemon"):  # no code of their own: the code server's
        [c] = deployments[name]["spec"]["template"]["spec"]["containers"]
        assert "/opt/dagster/workspace/workspace.yaml" in c["args"]
    workspace = yaml.safe_load(configmap(docs, "dagster-workspace")["data"]["workspace.yaml"])
    assert workspace["load_from"] == [
        {"grpc_server": {"host": "dagster-code", "port": 4000, "location_name": "ha_sync"}}
    ]


def configmap(docs, prefix: str) -> dict:
    """A generated ConfigMap by its name before kustomize's hash suffix."""
    [found] = [d for name, d in of_kind(docs, "ConfigMap").items() if re.fullmatch(rf"{prefix}-[a-z0-9]{{10}}", name)]
    return found


def instance_config(docs) -> dict:
    mounted = configmap(docs, "dagster-instance")["data"]["dagster.yaml"]
    assert of_kind(docs, "ConfigMap")["dagster-instance-runs"]["data"]["dagster.yaml"] == mounted  # the run pods'
    return yaml.safe_load(mounted)


def test_instance_config_loads_as_a_dagster_instance_config(built, tmp_path, monkeypatch):
    from dagster._core.instance.config import dagster_instance_config

    _, docs = built
    (tmp_path / "dagster.yaml").write_text(configmap(docs, "dagster-instance")["data"]["dagster.yaml"])
    monkeypatch.setenv("DAGSTER_MYSQL_URL", "mysql+mysqlconnector://u:p@db:3306/general_db")
    config, _ = dagster_instance_config(str(tmp_path))
    assert config["run_launcher"]["class"] == "K8sRunLauncher"
    assert config["storage"]["mysql"]["mysql_url"] == {"env": "DAGSTER_MYSQL_URL"}
    assert config["compute_logs"]["class"] == "NoOpComputeLogManager"  # nothing written on the HP's NFS
    assert config["run_monitoring"]["start_timeout_seconds"] < 15 * 60  # a stuck pod frees the pair's slot in time
    assert "run_coordinator" not in config  # the default (queued) one, its limits in concurrency: runs:
    limits = config["concurrency"]["runs"]["tag_concurrency_limits"]
    assert {"key": "ha-sync/pair", "value": {"applyLimitPerUniqueValue": True}, "limit": 1} in limits


def test_every_run_pod_mounts_each_pair_where_the_registry_expects_it(built, monkeypatch, tmp_path):
    """Built by dagster-k8s's own code: the launcher configured from our ConfigMap, the run's tags from the job
    (or none: a run the UI launches for a check)."""
    from dagster import DagsterRun
    from dagster._config import process_config
    from dagster_k8s.container_context import K8sContainerContext
    from dagster_k8s.job import construct_dagster_k8s_job
    from dagster_k8s.launcher import K8sRunLauncher

    from hasync_pipeline.definitions import defs

    _, docs = built
    image = of_kind(docs, "Deployment")["dagster-code"]["spec"]["template"]["spec"]["containers"][0]["image"]
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
    from hasync_pipeline.pairs import load_registry
    from hasync_pipeline.pipeline.k8s import run_volumes

    job_tags = dict(defs.get_job_def("media_dell_to_hp").tags)
    assert all(len(value) < 40 for value in job_tags.values()), job_tags  # the run list reads at a glance
    registry = load_registry()
    expected = {
        f"pvc-{side}-{p.name}": f"/mnt/{side}/{p.path or p.name}" for p in registry.pairs for side in ("dell", "hp")
    }
    expected["pvc-ha-sync-logs"] = "/var/log/ha-sync"
    # a sync run, and a run launched from the UI without the job's tags (a sides_agree check)
    for tags in (job_tags, {}):
        run = DagsterRun(job_name="media_dell_to_hp", run_id="0" * 32, tags=tags)
        context = K8sContainerContext.create_for_run(run, launcher, include_run_tags=True)
        job = construct_dagster_k8s_job(
            context.get_k8s_job_config(job_image=image, run_launcher=launcher),  # the code server's, at run time
            ["dagster", "api", "execute_run", "{}"],
            "dagster-run-x",
            user_defined_k8s_config=context.run_k8s_config,
        ).to_dict()
        pod = job["spec"]["template"]["spec"]
        [container] = pod["containers"]
        assert container["image"] == image
        assert pod["service_account_name"] == "ha-sync-run"
        assert "ha-sync-db-secret" in [e["secret_ref"]["name"] for e in container["env_from"] if e.get("secret_ref")]
        claims = {
            v["name"]: v["persistent_volume_claim"]["claim_name"]
            for v in pod["volumes"]
            if v.get("persistent_volume_claim")
        }
        mounts = {m["name"]: m["mount_path"] for m in container["volume_mounts"]}
        by_claim = {claims[name]: path for name, path in mounts.items() if name in claims}
        assert by_claim == expected  # where the registry's default roots expect each pair
        assert pod["security_context"]["run_as_user"] == 0
        assert {"name": "HA_SYNC_DRY_RUN", "value": "true"} in [
            {k: e[k] for k in ("name", "value")} for e in container["env"]
        ]
    assert set(expected) <= set(of_kind(docs, "PersistentVolumeClaim"))  # and the manifests have those claims
    launcher_config = instance_config(docs)["run_launcher"]["config"]
    generated = run_volumes(registry)
    assert (launcher_config["volumes"], launcher_config["volume_mounts"]) == (
        generated["volumes"],
        generated["volume_mounts"],
    )  # the YAML is what `python -m hasync_pipeline.pipeline.k8s` prints


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


def test_dockerfile_installs_the_locked_dependencies_before_the_code_and_keeps_the_rest_out():
    text = (REPO / "Dockerfile").read_text()
    deps = text.index("pip install --require-virtualenv -r /src/.ci/requirements.lock")
    assert deps < text.index("COPY hasync_pipeline") < text.index("--no-deps /src")  # code changes: one layer
    assert not re.search(r"^HEALTHCHECK", text, re.M) and "USER hasync" in text
    assert all(
        re.fullmatch(r"python:3\.\d+\.\d+-slim-\w+( AS build)?", f) for f in re.findall(r"^FROM (.+)$", text, re.M)
    )
    ignore = [line for line in (REPO / ".dockerignore").read_text().splitlines() if line and not line.startswith("#")]
    assert (
        ignore[0] == "*"
        and "!hasync_pipeline/" in ignore
        and not any("test" in line or "bench" in line for line in ignore)
    )


@pytest.mark.slow
def test_set_image_tags_the_commit_and_writes_the_one_image_of_k8s(tmp_path):
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    proc = subprocess.run(
        ["sh", "k8s/set-image.sh"], cwd=clone, env={**os.environ, "SKIP_BUILD": "1"}, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=clone, capture_output=True, text=True)
    tag = f"{version}-{sha.stdout.strip()}"
    assert f"newTag: {tag}" in (clone / "k8s" / "kustomization.yaml").read_text()
    assert f"192.168.2.100:5000/ha-sync:{tag}" in proc.stdout


@pytest.fixture(scope="module")
def image_venv(tmp_path_factory) -> Path:
    """What the Dockerfile's build stage does: a fresh venv, the package with the locked dependencies."""
    venv = tmp_path_factory.mktemp("image") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    for step in (["-r", REPO / ".ci" / "requirements.lock"], ["--no-deps", str(REPO)]):  # the Dockerfile's 2 layers
        proc = subprocess.run(
            [venv / "bin" / "pip", "install", "-q", *step], capture_output=True, text=True, timeout=900
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


def test_the_monitoring_component_scrapes_the_dashboard_and_provisions_its_grafana_dashboard(tmp_path):
    docs = build(["monitoring"], tmp_path)
    [monitor] = of_kind(docs, "ServiceMonitor").values()
    service = of_kind(docs, "Service")["ha-sync-ui"]
    selected = monitor["spec"]["selector"]["matchLabels"]
    assert selected.items() <= service["metadata"]["labels"].items()  # the dashboard's Service, and only it
    assert not any(
        selected.items() <= (s["metadata"].get("labels") or {}).items()
        for name, s in of_kind(docs, "Service").items()
        if name != "ha-sync-ui"
    )
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics" and endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    dashboard = of_kind(docs, "ConfigMap")["ha-sync-grafana-dashboard"]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["ha-sync.json"])["uid"] == "ha-sync"
    assert "ha-sync" in of_kind(docs, "PrometheusRule")
    [rule] = of_kind(docs, "NetworkPolicy")["ha-sync-ui-from-prometheus"]["spec"]["ingress"]
    assert rule["ports"] == [{"port": 8080, "protocol": "TCP"}]
