"""Shared helpers: real folders on disk, snapshots of them, running a sync or the real CLI."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from hasync_pipeline.engine import SyncOptions, run_sync
from hasync_pipeline.pipeline.alerts import AuditAlertLog
from hasync_pipeline.settings import resolve

_INTERNAL = set(SyncOptions.__dataclass_fields__) - {
    "dry_run",
    "delete_missing",
    "workers",
    "mtime_threshold",
    "max_delete_percent",
    "trash_retain_days",
    "excludes",
    "xattrs",
    "hard_links",
    "sparse",
    "walk_threads",
    "stall_timeout",
    "scope",
    "allow_unmounted",
}
_SETTING_NAME = {"max_delete_percent": "max_delete", "excludes": "exclude"}


def options(**overrides) -> SyncOptions:
    """Engine options from the settings table (the environment ignored), a real run unless dry_run=True;
    the engine's internal knobs (batch sizes...) by keyword too."""
    internal = {k: overrides.pop(k) for k in list(overrides) if k in _INTERNAL}
    named = {_SETTING_NAME.get(k, k): v for k, v in overrides.items()}
    return resolve(overrides={"dry_run": False, **named}, environ={}).sync_options(**internal)


NOBODY = 65534


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests on the real MariaDB server are slow (it starts in ~2 s); their SQLite twins stay in the fast set."""
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if "mariadb" in getattr(item, "fixturenames", ()) or params.get("db_dsn") == "mariadb":
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def isolated_state(tmp_path_factory, monkeypatch):
    """Every test gets its own state folder (embedded SQLite, local leases) and no inherited DSN."""
    monkeypatch.setenv("HA_SYNC_STATE_DIR", str(tmp_path_factory.mktemp("state")))
    monkeypatch.delenv("HA_SYNC_DB_DSN", raising=False)
    monkeypatch.setenv("HA_SYNC_LEASE_BACKEND", "local")
    AuditAlertLog.memory.clear()  # the alert rate limit's memory is per process: per test here


@pytest.fixture(scope="session")
def mariadb():
    from hasync_pipeline.devtools.mariadb import MariaDB

    server = MariaDB()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "mariadb"])
def db_dsn(request, tmp_path) -> str:
    """A fresh, empty audit database: an SQLite file, or a database on the real MariaDB server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'audit.sqlite3'}"
    server = request.getfixturevalue("mariadb")
    return server.go_dsn(server.new_database())


@pytest.fixture
def tmp_path(tmp_path_factory) -> Path:
    """Like pytest's, but under a world-traversable folder, so tests that drop to 'nobody' can reach it."""
    base = Path(tempfile.mkdtemp(prefix="hasync-test-"))
    os.chmod(base, 0o755)
    yield base
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Path, Path]:
    src, dest = tmp_path / "dell", tmp_path / "hp"
    src.mkdir()
    dest.mkdir()
    return src, dest


def write(path: Path | bytes, data: bytes | str = b"x", mtime: float | None = None) -> Path:
    path = Path(os.fsdecode(path)) if isinstance(path, bytes) else path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def write_deep(root: Path, parts: list[str], data: bytes) -> None:
    """Create root/parts[0]/.../parts[-1] through directory fds: works past PATH_MAX (4096 bytes)."""
    fd = os.open(root, os.O_RDONLY)
    for name in parts[:-1]:
        try:
            os.mkdir(name, dir_fd=fd)
        except FileExistsError:
            pass
        nfd = os.open(name, os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = nfd
    wfd = os.open(parts[-1], os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
    os.write(wfd, data)
    os.close(wfd)
    os.close(fd)


def read_deep(root: Path, parts: list[str]) -> bytes:
    fd = os.open(root, os.O_RDONLY)
    for name in parts[:-1]:
        nfd = os.open(name, os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = nfd
    rfd = os.open(parts[-1], os.O_RDONLY, dir_fd=fd)
    data = os.read(rfd, 1 << 20)
    os.close(rfd)
    os.close(fd)
    return data


def snapshot(root: Path) -> dict[bytes, tuple]:
    """Everything under root but internal names: path -> (kind, content or link target, mtime_ns)."""
    out = {}
    base = os.fsencode(root)
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames[:] = [d for d in dirnames if not d.startswith(b".hasync")]
        for name in dirnames + filenames:
            if name.startswith(b".hasync"):
                continue
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, base)
            st = os.lstat(full)
            if os.path.islink(full):
                out[rel] = ("link", os.readlink(full), st.st_mtime_ns)
                if name in dirnames:
                    dirnames.remove(name)
            elif os.path.isdir(full):
                out[rel] = ("dir", None, None)
            else:
                with open(full, "rb") as f:
                    out[rel] = ("file", f.read(), st.st_mtime_ns)
    return out


def largest_temp_file(root: Path) -> int:
    """The size of the biggest temp file under root now (0 if none): for waiting until a copy is under way.
    A temp file can be renamed into place, or a probe removed, between the listing and the stat."""
    sizes = [0]
    for path in internal_leftovers(root):
        try:
            sizes.append(os.path.getsize(path))
        except FileNotFoundError:
            continue
    return max(sizes)


def internal_leftovers(root: Path) -> list[str]:
    """Temp files anywhere under root (there must be none after any run, killed runs excepted)."""
    return [os.path.join(d, f) for d, _, files in os.walk(root) for f in files if f.startswith(".hasync-tmp-")]


def sync(src: Path, dest: Path, run_id: str = "test", labels: tuple[str, str] = ("source", "destination"), **opts):
    return run_sync(str(src), str(dest), options(**opts), run_id, labels=labels)


def synced(a: Path, b: Path, **opts) -> None:
    """Sync a -> b and back, for real: both roots agree and the journal knows every path (the state most
    tests start from: two-way decisions compare with it)."""
    sync(a, b, **opts)
    sync(b, a, **opts)


def as_user(uid: int, fn, *args):
    """Run fn(*args) in a forked child with the given uid (root ignores permissions, so tests that need an
    unreadable file drop to 'nobody'); returns fn's pickled result or re-raises its exception."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(r)
        try:
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
            payload = pickle.dumps(("ok", fn(*args)))
        except BaseException as exc:  # noqa: BLE001 - handed to the parent
            payload = pickle.dumps(("error", repr(exc)))
        with os.fdopen(w, "wb") as f:
            f.write(payload)
        os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    os.waitpid(pid, 0)
    status, value = pickle.loads(data)
    if status == "error":
        raise AssertionError(f"child failed: {value}")
    return value


def pair_args(src: Path | str, dest: Path | str, pair: str = "media") -> tuple[str, ...]:
    """`ha-sync`'s required arguments."""
    return ("--src", str(src), "--dest", str(dest), "--pair", pair)


def run_cli(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """The real `ha-sync` entry point in a subprocess."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "hasync_pipeline.cli", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
    )


@pytest.fixture
def received(monkeypatch):
    """The alerts a real webhook receiver got (HA_SYNC_ALERT_WEBHOOK points at it)."""
    got: list[dict] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):
            got.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *a):
            pass

    server = HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("HA_SYNC_ALERT_WEBHOOK", f"http://127.0.0.1:{server.server_address[1]}/hook")
    yield got
    server.shutdown()
