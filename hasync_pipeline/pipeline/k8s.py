"""The pod each sync run gets in the cluster (dagster-k8s reads the `dagster-k8s/config` job tag): exactly
its pair's two NFS volumes and the logs volume, mounted where the registry expects them."""

from __future__ import annotations

import json

from ..pairs import Pair

K8S_CONFIG_TAG = "dagster-k8s/config"
LOGS_CLAIM, LOGS_MOUNT = "pvc-ha-sync-logs", "/var/log/ha-sync"


def claim_name(side: str, pair: str) -> str:
    return f"pvc-{side}-{pair}"


def pod_config(pair: Pair) -> dict:
    volumes, mounts = [], []
    for side in ("dell", "hp"):
        volume = f"{side}-{pair.name}"
        volumes.append({"name": volume, "persistentVolumeClaim": {"claimName": claim_name(side, pair.name)}})
        mounts.append({"name": volume, "mountPath": f"/mnt/{side}/{pair.path or pair.name}"})
    volumes.append({"name": "logs", "persistentVolumeClaim": {"claimName": LOGS_CLAIM}})
    mounts.append({"name": "logs", "mountPath": LOGS_MOUNT})
    return {"pod_spec_config": {"volumes": volumes}, "container_config": {"volume_mounts": mounts}}


def pod_config_tag(pair: Pair) -> dict[str, str]:
    return {K8S_CONFIG_TAG: json.dumps(pod_config(pair))}
