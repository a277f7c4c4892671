"""A small Lease API server with the real semantics the lease code depends on (there is no kube-apiserver
here): POST 201 / 409 AlreadyExists, GET 200 / 404, PUT with a stale resourceVersion 409 Conflict and
without one 422 Invalid, DELETE honouring preconditions.resourceVersion, and injectable failures.  It also
answers GET of a pod (200 with its phase, 404 when there is no such pod): a lease's holder may be gone."""

from __future__ import annotations

import json
import os
import re
import threading
import uuid
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_PATH = re.compile(r"^/apis/coordination\.k8s\.io/v1/namespaces/(?P<ns>[^/]+)/leases(?:/(?P<name>[^/?]+))?")
_POD = re.compile(r"^/api/v1/namespaces/(?P<ns>[^/]+)/pods/(?P<name>[^/?]+)")


def _status(code: int, reason: str, message: str) -> dict:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure" if code >= 400 else "Success",
        "reason": reason,
        "message": message,
        "code": code,
    }


class FakeKube:
    def __init__(self):
        self.leases: dict[tuple[str, str], dict] = {}
        self.requests: list[tuple[str, str]] = []
        self.failures: list[int] = []  # status codes to answer the next requests with
        self.pods: dict[tuple[str, str], str] = {}  # (namespace, name) -> phase (Running, Failed...)
        self.pod_failures: list[int] = []  # status codes to answer the next pod reads with
        self.lock = threading.Lock()
        self._rv = 0
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _body(self):
                length = int(self.headers.get("Content-Length") or 0)
                return json.loads(self.rfile.read(length)) if length else None

            def _send(self, code: int, obj: dict):
                data = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self, method: str):
                pod = _POD.match(self.path)
                if pod and method == "GET":
                    return self._send(*fake.pod(pod.group("ns"), pod.group("name")))
                m = _PATH.match(self.path)
                body = self._body()
                if not m:
                    return self._send(404, _status(404, "NotFound", f"no route {self.path}"))
                code, obj = fake.handle(method, m.group("ns"), m.group("name"), body)
                self._send(code, obj)

            def do_GET(self):
                self._handle("GET")

            def do_POST(self):
                self._handle("POST")

            def do_PUT(self):
                self._handle("PUT")

            def do_DELETE(self):
                self._handle("DELETE")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    # ---- the API -------------------------------------------------------------------------------
    def handle(self, method: str, ns: str, name: str | None, body: dict | None) -> tuple[int, dict]:
        with self.lock:
            self.requests.append((method, name or ""))
            if self.failures:
                code = self.failures.pop(0)
                return code, _status(code, "InternalError", "injected failure")
            key = (ns, name or (body or {}).get("metadata", {}).get("name", ""))
            current = self.leases.get(key)
            if method == "POST":
                if current is not None:
                    return 409, _status(409, "AlreadyExists", f'leases.coordination.k8s.io "{key[1]}" already exists')
                return 201, self._store(key, body, created=True)
            if current is None:
                return 404, _status(404, "NotFound", f'leases.coordination.k8s.io "{key[1]}" not found')
            if method == "GET":
                return 200, current
            if method == "PUT":
                rv = (body.get("metadata") or {}).get("resourceVersion")
                if not rv:
                    return 422, _status(
                        422, "Invalid", "metadata.resourceVersion: Invalid value: 0x0: must be specified for an update"
                    )
                if rv != current["metadata"]["resourceVersion"]:
                    return 409, _status(
                        409,
                        "Conflict",
                        "the object has been modified; please apply your changes to the latest version and try again",
                    )
                return 200, self._store(key, body, created=False)
            if method == "DELETE":
                wanted = ((body or {}).get("preconditions") or {}).get("resourceVersion")
                if wanted and wanted != current["metadata"]["resourceVersion"]:
                    return 409, _status(409, "Conflict", "Precondition failed: ResourceVersion")
                del self.leases[key]
                return 200, _status(200, "", "deleted")
            return 405, _status(405, "MethodNotAllowed", method)

    def pod(self, ns: str, name: str) -> tuple[int, dict]:
        with self.lock:
            self.requests.append(("GET pod", name))
            if self.pod_failures:
                code = self.pod_failures.pop(0)
                return code, _status(code, "Forbidden" if code == 403 else "InternalError", "injected failure")
            phase = self.pods.get((ns, name))
        if phase is None:
            return 404, _status(404, "NotFound", f'pods "{name}" not found')
        meta = {"name": name, "namespace": ns, "uid": str(uuid.uuid5(uuid.NAMESPACE_DNS, name))}
        return 200, {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": meta,
            "spec": {"containers": []},
            "status": {"phase": phase},
        }

    def _store(self, key, body: dict, created: bool) -> dict:
        self._rv += 1
        meta = dict(body.get("metadata") or {})
        meta.update({"name": key[1], "namespace": key[0], "resourceVersion": str(self._rv)})
        if created:
            meta.update({"uid": str(uuid.uuid4()), "creationTimestamp": _now_text()})
        else:
            old = self.leases[key]["metadata"]
            meta.update({"uid": old["uid"], "creationTimestamp": old["creationTimestamp"]})
        obj = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": meta,
            "spec": body.get("spec") or {},
        }
        self.leases[key] = obj
        return obj

    # ---- test helpers --------------------------------------------------------------------------
    def lease(self, name: str, ns: str = "infrastructure") -> dict | None:
        with self.lock:
            return self.leases.get((ns, name))

    def edit(self, name: str, ns: str = "infrastructure", **spec) -> None:
        """Change a lease as another writer would (bumps the resourceVersion)."""
        with self.lock:
            obj = self.leases[(ns, name)]
            self._store((ns, name), {"metadata": obj["metadata"], "spec": {**obj["spec"], **spec}}, created=False)

    def age(self, name: str, seconds: float, ns: str = "infrastructure") -> None:
        """Move the lease's renewTime into the past: as if `seconds` had gone by without a renewal."""
        past = (datetime.now(UTC) - timedelta(seconds=seconds)).isoformat()
        self.edit(name, ns, renewTime=past, acquireTime=past)

    def count(self, method: str, name: str) -> int:
        with self.lock:
            return sum(1 for m, n in self.requests if m == method and n == name)

    def kubeconfig(self, folder: str, namespace: str = "infrastructure") -> str:
        path = os.path.join(folder, "kubeconfig")
        with open(path, "w") as f:
            json.dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "current-context": "test",
                    "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
                    "users": [{"name": "u", "user": {"token": "t"}}],
                    "contexts": [{"name": "test", "context": {"cluster": "fake", "user": "u", "namespace": namespace}}],
                },
                f,
            )
        return path

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _now_text() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
