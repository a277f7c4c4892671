"""The container entrypoint: `ha-sync-entrypoint <command> [args...]`.

The cluster secret holds one Go-style DSN (HA_SYNC_DB_DSN).  Dagster's MySQL storage wants a SQLAlchemy
URL, so this derives DAGSTER_MYSQL_URL from it (unless set) and then execs the command: the webserver, the
daemon, each run pod (dagster-k8s only sets the container's args) and the dashboard all start through it.
"""

from __future__ import annotations

import os
import sys

from .audit.dsn import DsnError, to_url
from .settings import BY_NAME, SettingError, deployment


def dagster_mysql_url(dsn: str) -> str | None:
    url = to_url(dsn)
    if url.get_backend_name() != "mysql":
        return None
    return url.set(drivername="mysql+mysqlconnector").render_as_string(hide_password=False)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        print("usage: ha-sync-entrypoint COMMAND [ARGS...]", file=sys.stderr)
        return 2
    try:
        dsn = deployment().db_dsn
    except SettingError as exc:
        print(f"ha-sync-entrypoint: {exc}", file=sys.stderr)
        return 2
    if dsn and not os.environ.get("DAGSTER_MYSQL_URL"):
        try:
            url = dagster_mysql_url(dsn)
        except DsnError as exc:
            print(f"ha-sync-entrypoint: {BY_NAME['db_dsn'].env}: {exc}", file=sys.stderr)
            return 2
        if url:
            os.environ["DAGSTER_MYSQL_URL"] = url
    try:
        os.execvp(argv[0], argv)
    except OSError as exc:
        print(f"ha-sync-entrypoint: cannot run {argv[0]}: {exc.strerror}", file=sys.stderr)
        return 127


if __name__ == "__main__":
    sys.exit(main())
