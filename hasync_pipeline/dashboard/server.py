"""`ha-sync-ui --host H --port P`: serve the dashboard (uvicorn, which dagster-webserver already brings)."""

from __future__ import annotations

import argparse
import sys

from ..settings import BY_NAME, SettingError


def main(argv: list[str] | None = None) -> int:
    dsn, link = BY_NAME["db_dsn"].env, BY_NAME["dagster_url"].env
    p = argparse.ArgumentParser(
        prog="ha-sync-ui",
        description="Read-only HA Sync status page over the audit "
        f"tables (${dsn}; ${link} links runs to the Dagster UI).",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    p.add_argument("--port", type=int, default=8080, help="port (default: %(default)s)")
    args = p.parse_args(argv)
    import uvicorn

    from ..audit import DsnError
    from .app import create_app

    try:
        app = create_app()
    except (DsnError, SettingError) as exc:
        print(f"ha-sync-ui: {dsn}: {exc}" if isinstance(exc, DsnError) else f"ha-sync-ui: {exc}", file=sys.stderr)
        return 2
    uvicorn.run(app, host=args.host, port=args.port, log_level="info", access_log=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
