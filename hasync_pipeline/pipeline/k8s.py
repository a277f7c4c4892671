"""The volumes every run pod mounts in the cluster: each pair's two NFS exports where the registry expects
them (/mnt/<side>/<path>), and the logs volume.

They are set once, in the run launcher's config (k8s/config/dagster-instance.yaml), not per job in a
`dagster-k8s/config` tag: that tag was ~600 characters of JSON on every run in the UI's run list, and a run
launched from the UI without the job's tags (a `sides_agree` check, an asset's "materialize") got no volumes.
Every pod mounts every pair; a run reads and writes only its own pair's folders.  When a server dies all
its exports go at once, so per-pair mounts isolated nothing in the failure that matters.

`python -m hasync_pipeline.pipeline.k8s` prints the YAML to paste there; a test checks they agree.
"""

from __future__ import annotations

import sys

import yaml

from ..pairs import SERVERS, Registry, load_registry

LOGS_CLAIM, LOGS_MOUNT = "pvc-ha-sync-logs", "/var/log/ha-sync"


def claim_name(side: str, pair: str) -> str:
    return f"pvc-{side}-{pair}"


def run_volumes(registry: Registry) -> dict[str, list[dict]]:
    """The run launcher's `volumes` and `volume_mounts`, for every pair of the registry."""
    volumes, mounts = [], []
    for pair in registry.pairs:
        for side in SERVERS:
            volume = f"{side}-{pair.name}"
            volumes.append({"name": volume, "persistentVolumeClaim": {"claimName": claim_name(side, pair.name)}})
            mounts.append({"name": volume, "mountPath": f"/mnt/{side}/{pair.path or pair.name}"})
    volumes.append({"name": "logs", "persistentVolumeClaim": {"claimName": LOGS_CLAIM}})
    mounts.append({"name": "logs", "mountPath": LOGS_MOUNT})
    return {"volumes": volumes, "volume_mounts": mounts}


if __name__ == "__main__":
    yaml.safe_dump(run_volumes(load_registry()), sys.stdout, sort_keys=False, default_flow_style=None, width=120)
