"""A real MariaDB server for the tests: its own data folder, TCP on a free loopback port, a user with a
password full of DSN-hostile characters.  Started once per test session (about 2 s)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time

import pymysql

USER = "hasync"
PASSWORD = "p@ss:w/rd?&="  # exercises DSN parsing: '@', ':', '/', '?', '&', '='


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MariaDB:
    def __init__(self):
        mariadbd = shutil.which("mariadbd") or "/usr/sbin/mariadbd"
        install = shutil.which("mariadb-install-db")
        if not os.path.exists(mariadbd) or not install:
            raise RuntimeError("MariaDB is not installed: run .ci/install-system-packages (Debian's mariadb-server)")
        self.dir = tempfile.mkdtemp(prefix="hasync-mariadb-")
        self.datadir = os.path.join(self.dir, "data")
        self.socket = os.path.join(self.dir, "mysqld.sock")
        self.port = free_port()
        user = ["--user=root"] if os.geteuid() == 0 else []
        subprocess.run(
            [
                install,
                "--no-defaults",
                f"--datadir={self.datadir}",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                *user,
            ],
            check=True,
            capture_output=True,
        )
        self.log = open(os.path.join(self.dir, "server.log"), "w")
        self.command = [
            mariadbd,
            "--no-defaults",
            f"--datadir={self.datadir}",
            f"--socket={self.socket}",
            f"--port={self.port}",
            "--bind-address=127.0.0.1",
            "--character-set-server=utf8mb4",
            "--collation-server=utf8mb4_unicode_ci",
            "--innodb-buffer-pool-size=128M",
            "--innodb-flush-log-at-trx-commit=2",
            "--skip-log-bin",
            f"--pid-file={os.path.join(self.dir, 'mysqld.pid')}",
            *user,
        ]
        self.start_server()
        with self.root() as conn, conn.cursor() as cur:
            cur.execute(f"CREATE USER '{USER}'@'127.0.0.1' IDENTIFIED BY %s", (PASSWORD,))
            cur.execute(f"GRANT ALL ON *.* TO '{USER}'@'127.0.0.1'")
        self._n = 0

    def start_server(self) -> None:
        self.proc = subprocess.Popen(self.command, stdout=self.log, stderr=subprocess.STDOUT)
        self._wait_ready()

    def stop_server(self) -> None:
        """Stop the server (the data stays): 'the database is down'."""
        self.proc.terminate()
        self.proc.wait(timeout=60)

    def _wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mariadbd exited: see {self.log.name}")
            try:
                self.root().close()
                return
            except pymysql.err.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)  # polling a starting server: the condition is "accepts a connection"

    def root(self):
        return pymysql.connect(unix_socket=self.socket, user="root", autocommit=True)

    def new_database(self) -> str:
        """A fresh database for one test."""
        self._n += 1
        name = f"hasync_t{self._n}"
        with self.root() as conn, conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE {name} CHARACTER SET utf8mb4")
        return name

    def go_dsn(self, database: str) -> str:
        return f"{USER}:{PASSWORD}@tcp(127.0.0.1:{self.port})/{database}?parseTime=true&loc=UTC"

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)
