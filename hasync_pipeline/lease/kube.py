"""The Kubernetes lease: a coordination.k8s.io/v1 Lease `ha-sync-<pair>` (the seed's choice: native TTL, no
database needed to lock).

Every write carries the resourceVersion we read, so of two racing writers exactly one wins (the other gets
409 Conflict); creation races are decided by 409 AlreadyExists.  RBAC needed: leases get, create, update,
delete in the namespace, and pods get.

No lease outlives its holder: a holder in a pod records the pod's name (annotation HOLDER_POD), and a lease
whose pod no longer exists - or has ended, Succeeded or Failed - counts as expired, as a dead local process
does for the local lease.  A run SIGKILLed with its lease held (a pod deleted while its share hung) then
blocks its pair until the next run asks, not for lock_ttl (an hour).  Any other answer (a live pod, no
right to read pods, an API that does not answer) leaves the lease held.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from kubernetes import client, config
from kubernetes.client.rest import ApiException
from urllib3.exceptions import HTTPError

from .base import HeldLease, LeaseHeld, LeaseLost, TransientLeaseError
from .identity import SERVICE_ACCOUNT_NAMESPACE, holder_pod, in_cluster

DEFAULT_NAMESPACE = "infrastructure"
REQUEST_TIMEOUT = 10  # seconds per API call
HOLDER_POD = "ha-sync.vandachevici.ro/holder-pod"  # the annotation naming the holder's pod
_ENDED = ("Succeeded", "Failed")


def default_api() -> tuple[client.CoordinationV1Api, str]:
    """In a pod: the service account and its namespace; elsewhere: the kubeconfig and its context's
    namespace (the lease_namespace setting, passed to acquire_kube, overrides both)."""
    if in_cluster():
        config.load_incluster_config()
        with open(SERVICE_ACCOUNT_NAMESPACE) as f:
            namespace = f.read().strip() or DEFAULT_NAMESPACE
    else:
        config.load_kube_config()
        _, active = config.list_kube_config_contexts()
        namespace = (active or {}).get("context", {}).get("namespace") or DEFAULT_NAMESPACE
    return client.CoordinationV1Api(), namespace


def _now() -> datetime:
    return datetime.now(UTC)


def _transient(exc: Exception) -> bool:
    if isinstance(exc, ApiException):
        return exc.status is None or exc.status == 0 or exc.status == 429 or exc.status >= 500
    return isinstance(exc, (HTTPError, OSError))


def _gone_pod(api: client.CoordinationV1Api, namespace: str, lease: client.V1Lease) -> str | None:
    """The holder's pod, if the lease names one and that pod no longer exists or has ended (else None)."""
    pod = (lease.metadata.annotations or {}).get(HOLDER_POD)
    if not pod:
        return None
    try:
        found = client.CoreV1Api(api.api_client).read_namespaced_pod(pod, namespace, _request_timeout=REQUEST_TIMEOUT)
    except ApiException as exc:
        return pod if exc.status == 404 else None  # 403 (no RBAC), 5xx: cannot tell, so it is held
    except (HTTPError, OSError):
        return None
    phase = found.status.phase if found.status is not None else None
    return pod if phase in _ENDED else None


def _annotate(meta: client.V1ObjectMeta) -> None:
    """Record this pod as the holder's (or no pod, outside a cluster)."""
    annotations = dict(meta.annotations or {})
    pod = holder_pod()
    if pod:
        annotations[HOLDER_POD] = pod
    else:
        annotations.pop(HOLDER_POD, None)
    meta.annotations = annotations or None


def _expired(lease: client.V1Lease, now: datetime) -> bool:
    spec = lease.spec
    renewed = spec.renew_time or spec.acquire_time
    if renewed is None or not spec.holder_identity:
        return True  # released or never held
    return renewed + timedelta(seconds=spec.lease_duration_seconds or 0) < now


class KubeLease(HeldLease):
    def __init__(
        self,
        api: client.CoordinationV1Api,
        namespace: str,
        name: str,
        holder: str,
        ttl: int,
        lease: client.V1Lease,
        renew_every: float | None = None,
    ):
        super().__init__(ttl, renew_every)
        self.api, self.namespace, self.name, self.holder = api, namespace, name, holder
        self.resource_version = lease.metadata.resource_version
        self._lease = lease

    def _call(self, fn, *args, **kwargs):
        try:
            return fn(*args, _request_timeout=REQUEST_TIMEOUT, **kwargs)
        except Exception as exc:  # noqa: BLE001 - sorted into transient or not
            if _transient(exc):
                raise TransientLeaseError(str(exc)) from None
            raise

    def _renew(self) -> None:
        lease = self._lease
        lease.spec.renew_time = _now()
        lease.metadata.resource_version = self.resource_version
        try:
            self._lease = self._call(self.api.replace_namespaced_lease, self.name, self.namespace, lease)
        except ApiException as exc:
            if exc.status not in (404, 409):
                raise TransientLeaseError(str(exc)) from None
            current = self._read()  # someone wrote it: still ours (e.g. a label was added)?
            if current is None or current.spec.holder_identity != self.holder:
                holder = current.spec.holder_identity if current else "nobody (deleted)"
                raise LeaseLost(f"lease {self.name} was taken over by {holder}") from None
            self._lease = current
            self.resource_version = current.metadata.resource_version
            raise TransientLeaseError("resourceVersion moved on; renewing again") from None
        self.resource_version = self._lease.metadata.resource_version

    def _verify(self) -> None:
        current = self._read()
        if current is None or current.spec.holder_identity != self.holder:
            holder = current.spec.holder_identity if current else "nobody (deleted)"
            raise LeaseLost(f"lease {self.name} was taken over by {holder}")

    def _read(self) -> client.V1Lease | None:
        try:
            return self._call(self.api.read_namespaced_lease, self.name, self.namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def _delete_if_ours(self) -> None:
        for _ in range(3):
            current = self._read()
            if current is None or current.spec.holder_identity != self.holder:
                return  # never delete a lease we do not hold
            body = client.V1DeleteOptions(
                preconditions=client.V1Preconditions(resource_version=current.metadata.resource_version)
            )
            try:
                self._call(self.api.delete_namespaced_lease, self.name, self.namespace, body=body)
                return
            except ApiException as exc:
                if exc.status == 404:
                    return
                if exc.status != 409:
                    raise


def acquire_kube(
    pair: str,
    holder: str,
    ttl: int,
    api: client.CoordinationV1Api | None = None,
    namespace: str | None = None,
    retries: int = 3,
    renew_every: float | None = None,
) -> KubeLease:
    if api is None:
        api, default_ns = default_api()
        namespace = namespace or default_ns
    namespace = namespace or DEFAULT_NAMESPACE
    name = f"ha-sync-{pair}"
    for attempt in range(retries + 1):
        try:
            return _try_acquire(api, namespace, name, holder, ttl, renew_every)
        except TransientLeaseError:
            if attempt == retries:
                raise
            time.sleep(min(2**attempt, 10))  # backoff before asking the API server again
    raise AssertionError("unreachable")


def _try_acquire(
    api: client.CoordinationV1Api, namespace: str, name: str, holder: str, ttl: int, renew_every: float | None
) -> KubeLease:
    now = _now()
    spec = client.V1LeaseSpec(
        holder_identity=holder, lease_duration_seconds=int(ttl), acquire_time=now, renew_time=now, lease_transitions=0
    )
    body = client.V1Lease(metadata=client.V1ObjectMeta(name=name, namespace=namespace), spec=spec)
    _annotate(body.metadata)
    try:
        created = api.create_namespaced_lease(namespace, body, _request_timeout=REQUEST_TIMEOUT)
        return KubeLease(api, namespace, name, holder, ttl, created, renew_every).start_heartbeat()
    except ApiException as exc:
        if exc.status != 409:
            if _transient(exc):
                raise TransientLeaseError(str(exc)) from None
            raise
    except (HTTPError, OSError) as exc:
        raise TransientLeaseError(str(exc)) from None
    try:
        current = api.read_namespaced_lease(name, namespace, _request_timeout=REQUEST_TIMEOUT)
    except ApiException as exc:
        if exc.status == 404:
            raise TransientLeaseError("lease vanished between create and read") from None
        if _transient(exc):
            raise TransientLeaseError(str(exc)) from None
        raise
    note = None
    if current.spec.holder_identity != holder and not _expired(current, now):
        pod = _gone_pod(api, namespace, current)
        if pod is None:
            raise LeaseHeld(name, current.spec.holder_identity, current.spec.acquire_time)
        note = f"took over lease {name} from {current.spec.holder_identity}: its pod {pod} no longer runs"
    # ours already, expired, or its holder's pod gone: take it over with the resourceVersion we read
    previous = current.spec.holder_identity
    _annotate(current.metadata)
    current.spec.holder_identity = holder
    current.spec.lease_duration_seconds = int(ttl)
    current.spec.acquire_time = now
    current.spec.renew_time = now
    current.spec.lease_transitions = (current.spec.lease_transitions or 0) + 1
    try:
        taken = api.replace_namespaced_lease(name, namespace, current, _request_timeout=REQUEST_TIMEOUT)
    except ApiException as exc:
        if exc.status == 409:  # someone else won the takeover
            winner = api.read_namespaced_lease(name, namespace, _request_timeout=REQUEST_TIMEOUT)
            raise LeaseHeld(name, winner.spec.holder_identity, winner.spec.acquire_time) from None
        if _transient(exc):
            raise TransientLeaseError(str(exc)) from None
        raise
    lease = KubeLease(api, namespace, name, holder, ttl, taken, renew_every)
    lease.note = note if previous != holder else None
    return lease.start_heartbeat()
