"""`ha-sync-ui --host H --port P`: serve the dashboard (uvicorn, which dagster-webserver already brings)."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="ha-sync-ui", description="Read-only HA Sync status page over the audit "
                                "tables ($HA_SYNC_DB_DSN; HA_SYNC_DAGSTER_URL links runs to the Dagster UI).")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    p.add_argument("--port", type=int, default=8080, help="port (default: %(default)s)")
    args = p.parse_args(argv)
    import uvicorn

    from ..audit import DsnError
    from .app import create_app
    try:
        app = create_app()
    except DsnError as exc:
        print(f"ha-sync-ui: HA_SYNC_DB_DSN: {exc}", file=sys.stderr)
        return 2
    uvicorn.run(app, host=args.host, port=args.port, log_level="info", access_log=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
