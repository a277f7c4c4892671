"""Who holds a lease and whether we run in a pod: no kubernetes import here (it costs ~0.4 s)."""

from __future__ import annotations

import os
import socket

SERVICE_ACCOUNT_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


def in_cluster() -> bool:
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST")) and os.path.exists(SERVICE_ACCOUNT_NAMESPACE)


def holder_identity(run_id: str) -> str:
    """`<pod-name>/<run-id>` (the pod name from $POD_NAME, else the hostname)."""
    return f"{os.environ.get('POD_NAME') or socket.gethostname()}/{run_id}"


def holder_pod() -> str | None:
    """This pod's name when we run in one (the lease records it: a lease whose pod is gone counts as
    expired), else None: $POD_NAME (the downward API), else, inside a cluster, the hostname (a Job's pod
    has its own name as hostname)."""
    return os.environ.get("POD_NAME") or (socket.gethostname() if in_cluster() else None)
